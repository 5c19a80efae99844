//! `orchestrator backup FILE` against a running server: copies taken while runs are being
//! written are consistent (every run has all its steps, every finished run its results)
//! and hold the runs committed before the copy began.

use std::path::Path;
use std::process::Command;

use orchestrator::model::{RunStatus, StepStatus};
use orchestrator::store::Store;
use orchestrator::store::sqlite::SqliteStore;
use serde_json::{Value, json};

use crate::helpers::{ServerProcess, wait_until, write_config};

fn backup(config: &Path, file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("-config")
        .arg(config)
        .arg("backup")
        .arg(file)
        .output()
        .unwrap()
}

/// Checks a copy: intact, and every run with its three steps, finished runs with their
/// results, as the store reads them from the copy. Returns how many runs it holds.
async fn check_copy(file: &Path) -> i64 {
    let ids: Vec<String> = {
        let copy = rusqlite::Connection::open(file).unwrap();
        let check: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let mut stmt = copy.prepare("SELECT id FROM runs").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let store = SqliteStore::open(file, false, 1).unwrap();
    let mut torn = Vec::new();
    for id in &ids {
        let run = store.get_run(id).await.unwrap();
        let done = run
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded);
        if run.steps.len() != 3 || (run.status == RunStatus::Succeeded && done.count() != 3) {
            torn.push(id.clone());
        }
    }
    store.close().await.unwrap();
    assert!(
        torn.is_empty(),
        "runs without all their steps or results in {}: {torn:?}",
        file.display()
    );
    ids.len() as i64
}

#[tokio::test]
async fn a_backup_taken_while_runs_are_written_is_consistent_and_holds_the_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let server = ServerProcess::start(&config);
    let client = reqwest::Client::new();
    let wf: Value = client
        .post(format!("{}/v1/workflows", server.address))
        .json(&json!({"name": "three", "steps": [
            {"name": "a", "action": "transform", "input": {"set": {"a": 1}}},
            {"name": "b", "action": "transform", "input": {"set": {"b": 2}}},
            {"name": "c", "action": "transform", "input": {"set": {"c": 3}}}
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Writers: runs started back to back while the backups are taken.
    let address = server.address.clone();
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (client, address, id, started) = (
                client.clone(),
                address.clone(),
                wf["id"].clone(),
                started.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..150 {
                    let response = client
                        .post(format!("{address}/v1/runs"))
                        .json(&json!({"workflow_id": id}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 201);
                    started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    wait_until("some runs to be written", || async {
        (started.load(std::sync::atomic::Ordering::SeqCst) >= 50).then_some(())
    })
    .await;
    let mut counts = Vec::new();
    for n in 0..3 {
        let before = started.load(std::sync::atomic::Ordering::SeqCst) as i64;
        let file = dir.path().join(format!("copy-{n}.db"));
        let out = tokio::task::spawn_blocking({
            let (config, file) = (config.clone(), file.clone());
            move || backup(&config, &file)
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("backed up"), "{stdout}");
        let runs = check_copy(&file).await;
        assert!(
            runs >= before,
            "the copy holds the {before} runs created before it: {runs}"
        );
        counts.push(runs);
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    // A backup never overwrites a file.
    let out = backup(&config, &dir.path().join("copy-0.db"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
}

/// A copy cut short by a full disk (here: a file-size limit under the copy's size) fails
/// with the reason and leaves no file behind, so that the next backup can go there.
#[tokio::test]
async fn a_backup_cut_short_by_a_full_disk_fails_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let server = ServerProcess::start(&config);
    let client = reqwest::Client::new();
    let wf: Value = client
        .post(format!("{}/v1/workflows", server.address))
        .json(&json!({"name": "w", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let blob = "x".repeat(100 << 10);
    for _ in 0..10 {
        let response = client
            .post(format!("{}/v1/runs", server.address))
            .json(&json!({"workflow_id": wf["id"], "context": {"blob": blob}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let file = dir.path().join("copy.db");
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; exec prlimit --fsize=262144: -- "$0" -config "$1" backup "$2""#)
        .arg(env!("CARGO_BIN_EXE_orchestrator"))
        .arg(&config)
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("copying into"), "{stderr}");
    assert!(!file.exists(), "the partial copy is removed");
    let out = backup(&config, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(check_copy_runs(&file), 10);
}

fn check_copy_runs(file: &Path) -> i64 {
    let copy = rusqlite::Connection::open(file).unwrap();
    copy.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap()
}
