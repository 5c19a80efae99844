//! Durability across process death: the real binary is killed with SIGKILL while a step is
//! in flight, started again on the same store, and the run completes with every earlier
//! step having run exactly once; a step that was in flight at two crashes in a row is not
//! started a third time (the poison-run quarantine), and a graceful stop does not count.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{ServerProcess, wait_until, write_config};

async fn get(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_run_killed_mid_step_resumes_after_restart() {
    let downstream = MockServer::start().await;
    Mock::given(path("/first"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"n": 1})))
        .mount(&downstream)
        .await;
    // The first call to /slow hangs (the server dies meanwhile); later calls answer.
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(120)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"n": 2})))
        .mount(&downstream)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let server = ServerProcess::start(&config);
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", downstream.uri());
    let wf: Value = client
        .post(format!("{}/v1/workflows", server.address))
        .json(&json!({"name": "durable", "steps": [
            {"name": "first", "action": "http", "input": {"url": url("/first")}},
            {"name": "slow", "action": "http", "timeout_ms": 300000, "input": {"url": url("/slow")}},
            {"name": "last", "action": "transform", "input": {"set": {"total": "{{ steps.first.output.body.n + steps.slow.output.body.n }}"}}}
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run: Value = client
        .post(format!("{}/v1/runs", server.address))
        .json(&json!({"workflow_id": wf["id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();
    wait_until("the slow step to be in flight", || async {
        let requests = downstream.received_requests().await.unwrap();
        requests
            .iter()
            .any(|r| r.url.path() == "/slow")
            .then_some(())
    })
    .await;
    server.kill();

    let server = ServerProcess::start(&config);
    let done = wait_until("the run to finish after the restart", || async {
        let run = get(&client, format!("{}/v1/runs/{run_id}", server.address)).await;
        matches!(run["status"].as_str(), Some("SUCCEEDED" | "FAILED")).then_some(run)
    })
    .await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["context"]["total"], 3);
    let requests = downstream.received_requests().await.unwrap();
    let calls = |p: &str| requests.iter().filter(|r| r.url.path() == p).count();
    assert_eq!(calls("/first"), 1, "the finished step did not run again");
    assert_eq!(
        calls("/slow"),
        2,
        "the in-flight step ran again (at least once)"
    );
    let keys: Vec<&str> = requests
        .iter()
        .filter(|r| r.url.path() == "/slow")
        .map(|r| r.headers["idempotency-key"].to_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [format!("{run_id}/slow"), format!("{run_id}/slow")],
        "same idempotency key"
    );
    assert_eq!(done["steps"][1]["attempts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn sigterm_exits_zero_and_a_parked_run_survives() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let server = ServerProcess::start(&config);
    let client = reqwest::Client::new();
    let wf: Value = client
        .post(format!("{}/v1/workflows", server.address))
        .json(&json!({"name": "parked", "steps": [
            {"name": "gate", "action": "transform", "requires_approval": true, "input": {"set": {"ok": true}}}
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run: Value = client
        .post(format!("{}/v1/runs", server.address))
        .json(&json!({"workflow_id": wf["id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();
    wait_until("the run to park", || async {
        let run = get(&client, format!("{}/v1/runs/{run_id}", server.address)).await;
        (run["status"] == "WAITING_APPROVAL").then_some(())
    })
    .await;
    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    let server = ServerProcess::start(&config);
    let parked = get(&client, format!("{}/v1/runs/{run_id}", server.address)).await;
    assert_eq!(parked["status"], "WAITING_APPROVAL");
    let approved = client
        .post(format!("{}/v1/runs/{run_id}/approve", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let done = wait_until("the approved run to finish", || async {
        let run = get(&client, format!("{}/v1/runs/{run_id}", server.address)).await;
        (run["status"] == "SUCCEEDED").then_some(run)
    })
    .await;
    assert_eq!(done["context"]["ok"], true);
}

/// Starts the run of a workflow whose first step calls `url` and returns its id.
async fn start_run(client: &reqwest::Client, server: &ServerProcess, steps: Value) -> String {
    let wf: Value = client
        .post(format!("{}/v1/workflows", server.address))
        .json(&json!({"name": "poison", "steps": steps}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run: Value = client
        .post(format!("{}/v1/runs", server.address))
        .json(&json!({"workflow_id": wf["id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    run["id"].as_str().unwrap().to_owned()
}

/// Waits until `downstream` has seen `n` calls of `path`.
async fn calls_reach(downstream: &MockServer, path: &str, n: usize) {
    wait_until(&format!("{n} call(s) of {path}"), || async {
        let requests = downstream.received_requests().await.unwrap();
        (requests.iter().filter(|r| r.url.path() == path).count() >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_step_in_flight_at_two_crashes_in_a_row_fails_instead_of_running_a_third_time() {
    let downstream = MockServer::start().await;
    // The poison step never answers: the server is killed while it is in flight.
    Mock::given(path("/bomb"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(300)))
        .mount(&downstream)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let client = reqwest::Client::new();
    let server = ServerProcess::start(&config);
    let bomb = format!("{}/bomb", downstream.uri());
    let run_id = start_run(
        &client,
        &server,
        json!([
            {"name": "bomb", "action": "http", "timeout_ms": 600000, "on_failure": "continue",
             "input": {"url": bomb}},
            {"name": "after", "action": "transform", "input": {"set": {"went_on": true}}}
        ]),
    )
    .await;
    calls_reach(&downstream, "/bomb", 1).await;
    server.kill();
    let server = ServerProcess::start(&config);
    calls_reach(&downstream, "/bomb", 2).await;
    server.kill();

    let server = ServerProcess::start(&config);
    let done = wait_until("the run to finish on the third start", || async {
        let run = get(&client, format!("{}/v1/runs/{run_id}", server.address)).await;
        matches!(run["status"].as_str(), Some("SUCCEEDED" | "FAILED")).then_some(run)
    })
    .await;
    let bomb_step = &done["steps"][0];
    assert_eq!(bomb_step["status"], "FAILED", "{done}");
    assert!(
        bomb_step["error"]
            .as_str()
            .unwrap()
            .contains("the server stopped while running this step 2 times"),
        "{done}"
    );
    assert_eq!(
        done["status"], "SUCCEEDED",
        "on_failure continue: the run went on {done}"
    );
    assert_eq!(done["context"]["went_on"], true);
    let requests = downstream.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "not called a third time");
}

#[tokio::test]
async fn a_graceful_stop_with_the_step_in_flight_is_not_counted_as_a_crash() {
    let downstream = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(300)))
        .mount(&downstream)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let start = || {
        ServerProcess::start_with_env(
            &config,
            "-config",
            &[("ORCHESTRATOR_SERVER__SHUTDOWN_GRACE", "1s")],
        )
    };
    let client = reqwest::Client::new();
    let server = start();
    let slow = format!("{}/slow", downstream.uri());
    start_run(
        &client,
        &server,
        json!([
            {"name": "slow", "action": "http", "timeout_ms": 600000, "input": {"url": slow}}
        ]),
    )
    .await;
    calls_reach(&downstream, "/slow", 1).await;
    server.kill();
    let server = start();
    calls_reach(&downstream, "/slow", 2).await;
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    // One crash, then a graceful stop: the step is started again, and again after a
    // second crash (the graceful stop broke the row).
    let server = start();
    calls_reach(&downstream, "/slow", 3).await;
    server.kill();
    let _server = start();
    calls_reach(&downstream, "/slow", 4).await;
}
