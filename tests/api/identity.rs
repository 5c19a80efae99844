//! Server identity and the lease fence on PostgreSQL, with the real binary: a server
//! killed with SIGKILL and restarted with the same `server.id` resumes its runs at once
//! (not after its own lease expires); a second live server with the same id is refused;
//! and a replica that missed its renewals (frozen with SIGSTOP while another took its run
//! over) starts no call once it runs again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{ServerProcess, Target, wait_until};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The config of server `id` on the database at `dsn`; `extra` is appended (YAML).
fn config(dir: &Path, id: &str, dsn: &str, lease_ttl: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{id}.yaml"));
    let text = format!(
        "server:\n  id: {id}\n  host: 127.0.0.1\n  port: 0\n  workers: 2\n\
         database:\n  dsn: {dsn}\n  pool_size: 6\n\
         engine:\n  poll_interval: 100ms\n  lease_ttl: {lease_ttl}\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn post(client: &reqwest::Client, server: &ServerProcess, path: &str, body: Value) -> Value {
    let response = client
        .post(format!("{}{path}", server.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// Creates a workflow of `steps` on `server` and starts a run of it there.
async fn start_run(client: &reqwest::Client, server: &ServerProcess, steps: Value) -> String {
    let wf = post(
        client,
        server,
        "/v1/workflows",
        json!({"name": "w", "steps": steps}),
    )
    .await;
    let run = post(client, server, "/v1/runs", json!({"workflow_id": wf["id"]})).await;
    run["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_server_restarted_after_sigkill_resumes_its_own_runs_within_two_seconds() {
    let target = Target::start().await;
    target.hold();
    let dsn = crate::pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    // A lease far longer than the bound: only recognising its own runs meets it.
    let config = config(dir.path(), "node-a", &dsn, "30s", "");
    let client = client();
    let server = ServerProcess::start(&config);
    let url = target.url("/slow");
    start_run(
        &client,
        &server,
        json!([{"name": "slow", "action": "http", "timeout_ms": 600000, "input": {"url": url}}]),
    )
    .await;
    target.wait_in_flight(1).await;
    server.kill();

    let spawned = Instant::now();
    let server = ServerProcess::start(&config);
    let listening = Instant::now();
    wait_until("the step to be called again", || async {
        (target.requests().len() == 2).then_some(())
    })
    .await;
    let resumed = listening.elapsed();
    println!(
        "restart: listening {} ms after the spawn; step called again {} ms after that",
        (listening - spawned).as_millis(),
        resumed.as_millis()
    );
    assert!(
        resumed < Duration::from_secs(2),
        "resumed {} ms after the restart",
        resumed.as_millis()
    );
    let keys: Vec<Option<String>> = target
        .requests()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys[0], keys[1], "the same step, run again");
    drop(server);
}

#[tokio::test]
async fn a_second_live_server_with_the_same_id_is_refused() {
    let dsn = crate::pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(&config(dir.path(), "twin", &dsn, "5s", ""));
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("-config")
        .arg(config(dir.path(), "twin", &dsn, "5s", ""))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("server.id \"twin\" is held by another live server"),
        "{stderr}"
    );
    let health = client()
        .get(format!("{}/ready", first.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the first one serves on");
}

/// Sends `signal` (`STOP`, `CONT`) to `server`.
fn signal(server: &ServerProcess, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Calls the downstream saw on `prefix` (each replica's `web.base_url` has its own).
async fn calls(downstream: &MockServer, prefix: &str) -> usize {
    downstream
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().starts_with(prefix))
        .count()
}

#[tokio::test]
async fn a_replica_that_missed_its_renewals_starts_no_call_once_it_runs_again() {
    // Every call fails and is retried every 200 ms, by whichever replica runs the step.
    let downstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&downstream)
        .await;
    let dsn = crate::pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let web = |name: &str| format!("web:\n  base_url: {}/{name}\n", downstream.uri());
    let a = ServerProcess::start(&config(dir.path(), "a", &dsn, "2s", &web("a")));
    let b = ServerProcess::start(&config(dir.path(), "b", &dsn, "2s", &web("b")));
    let client = client();
    let run = start_run(
        &client,
        &a,
        json!([{"name": "search", "action": "web.search", "input": {"query": "q"},
                "retry": {"max": 100, "backoff_ms": 200, "multiplier": 1}}]),
    )
    .await;
    wait_until("a to call a few times", || async {
        (calls(&downstream, "/a/").await >= 3).then_some(())
    })
    .await;

    // Frozen: a's renewals stop, its lease expires, and b takes the run over.
    signal(&a, "STOP");
    wait_until("b to take the run over", || async {
        (calls(&downstream, "/b/").await >= 2).then_some(())
    })
    .await;
    let by_a = calls(&downstream, "/a/").await;
    signal(&a, "CONT");
    // a's retry was due long ago; with its lease unconfirmed it must not call out.
    let by_b = calls(&downstream, "/b/").await;
    wait_until("b to call several more times", || async {
        (calls(&downstream, "/b/").await >= by_b + 8).then_some(())
    })
    .await;
    assert_eq!(
        calls(&downstream, "/a/").await,
        by_a,
        "the replica that lost its lease called out again"
    );
    let run: Value = client
        .get(format!("{}/v1/runs/{run}", a.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "RUNNING", "{run}");
    let cancel = client
        .post(format!(
            "{}/v1/runs/{}/cancel",
            a.address,
            run["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    drop(b);
}
