//! A full disk, for real: the binary runs under a file-size limit (`RLIMIT_FSIZE`, with
//! `SIGXFSZ` ignored), so that a write past it fails as on a full disk: the file cannot
//! grow (`EFBIG` rather than `ENOSPC`, so SQLite says "disk I/O error" rather than "database
//! or disk is full"). Readiness must say so while it lasts and recover by itself once the
//! limit is lifted, as when space is freed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{ServerProcess, wait_until};

/// The file-size limit the server starts under: room for the schema and a few runs.
const LIMIT_BYTES: u64 = 3 << 20;
/// The context each run carries, so that a few dozen runs outgrow the limit.
const CONTEXT_BYTES: usize = 200 << 10;

/// `sh` ignores SIGXFSZ (ignored signals stay ignored across `exec`) and `prlimit` sets
/// the soft limit, then both `exec` the binary, which keeps the shell's process id.
fn limited_server(config: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"trap '' XFSZ; exec prlimit --fsize="$0": -- "$1" -config "$2""#)
        .arg(LIMIT_BYTES.to_string())
        .arg(env!("CARGO_BIN_EXE_orchestrator"))
        .arg(config);
    command
}

/// Lifts the file-size limit of process `pid` (space freed).
fn lift_limit(pid: u32) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--fsize=unlimited:"])
        .status()
        .expect("prlimit runs");
    assert!(status.success(), "the file-size limit is lifted");
}

async fn ready(client: &reqwest::Client, server: &ServerProcess) -> (u16, Value) {
    let response = client
        .get(format!("{}/ready", server.address))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Starts a run; its id when the server accepted it, `None` when it answered 503.
async fn start_run(
    client: &reqwest::Client,
    server: &ServerProcess,
    body: &Value,
) -> Option<String> {
    let response = client
        .post(format!("{}/v1/runs", server.address))
        .json(body)
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        201 => {
            let run: Value = response.json().await.unwrap();
            Some(run["id"].as_str().unwrap().to_owned())
        }
        503 => None,
        other => panic!("starting a run answered {other}"),
    }
}

async fn status_of(client: &reqwest::Client, server: &ServerProcess, id: &str) -> String {
    let run: Value = client
        .get(format!("{}/v1/runs/{id}", server.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    run["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_fails_while_the_disk_is_full_and_recovers_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  port: 0\n  workers: 2\ndatabase:\n  path: {}\n\
             engine:\n  poll_interval: 100ms\n",
            dir.path().join("orchestrator.db").display()
        ),
    )
    .unwrap();
    let server = ServerProcess::spawn(limited_server(&config), &config);
    let client = reqwest::Client::new();
    assert_eq!(ready(&client, &server).await.0, 200);
    let workflow = json!({"name": "w", "steps": [
        {"name": "a", "action": "transform", "input": {"value": 1}}]});
    let created: Value = client
        .post(format!("{}/v1/workflows", server.address))
        .json(&workflow)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let workflow_id = created["id"].as_str().unwrap().to_owned();

    // Runs with large contexts until the store refuses a write and readiness says so.
    let blob = "x".repeat(CONTEXT_BYTES);
    let started = Instant::now();
    let body = json!({"workflow_id": workflow_id, "context": {"blob": blob}});
    let mut accepted = Vec::new();
    let problem = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the store still took writes after {} runs of {CONTEXT_BYTES} bytes",
            accepted.len()
        );
        accepted.extend(start_run(&client, &server, &body).await);
        let (status, problem) = ready(&client, &server).await;
        if status == 503 {
            break problem;
        }
    };
    assert!(!accepted.is_empty(), "the limit leaves room for some runs");
    let detail = problem["detail"].as_str().unwrap_or_default();
    // EFBIG is no ENOSPC, so SQLite names it a write error rather than a full disk.
    assert!(
        detail.contains("refuses writes") && detail.contains("disk I/O error"),
        "{problem}"
    );
    let reads = client
        .get(format!("{}/v1/workflows/{workflow_id}", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(reads.status(), 200, "reads go on while writes are refused");

    lift_limit(server.child.id());
    wait_until("readiness to recover once space is freed", || async {
        (ready(&client, &server).await.0 == 200).then_some(())
    })
    .await;
    let after = start_run(&client, &server, &body).await;
    accepted.push(after.expect("a run starts once space is freed"));
    for id in &accepted {
        wait_until(&format!("run {id}, accepted, to succeed"), || async {
            (status_of(&client, &server, id).await == "SUCCEEDED").then_some(())
        })
        .await;
    }
}
