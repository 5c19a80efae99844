//! Graceful shutdown: on SIGTERM the server stops accepting, lets the steps in flight finish
//! within `server.shutdown_grace`, records everything, ends log streams with a `shutdown`
//! event and exits 0; what was cut off resumes after the next start on the same store.
//! The slow step's target is a local server that holds its answer until the test lets go.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{LogStream, ServerProcess, Target, spawn_app_in, wait_until, write_config};

/// Beyond the grace period, how long a stop may take (commits, closing connections).
const MARGIN: Duration = Duration::from_secs(10);

fn slow_then_local(target: &Target) -> Value {
    json!({"name": "slow", "steps": [
        {"name": "slow", "action": "http", "timeout_ms": 120000, "input": {"url": target.url("/slow")}},
        {"name": "after", "action": "transform", "input": {"set": {"done": true}}}
    ]})
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let response = client.post(url).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

async fn start_slow_run(
    server: &ServerProcess,
    client: &reqwest::Client,
    target: &Target,
) -> String {
    let wf = post(
        client,
        format!("{}/v1/workflows", server.address),
        slow_then_local(target),
    )
    .await;
    let run = post(
        client,
        format!("{}/v1/runs", server.address),
        json!({"workflow_id": wf["id"]}),
    )
    .await;
    run["id"].as_str().unwrap().to_owned()
}

async fn finished_run(server: &ServerProcess, client: &reqwest::Client, run: &str) -> Value {
    wait_until("the run to finish after the restart", || async {
        let response = client
            .get(format!("{}/v1/runs/{run}", server.address))
            .send()
            .await
            .ok()?;
        let run: Value = response.json().await.ok()?;
        matches!(run["status"].as_str(), Some("SUCCEEDED" | "FAILED")).then_some(run)
    })
    .await
}

async fn log_messages(server: &ServerProcess, client: &reqwest::Client, run: &str) -> Vec<String> {
    let page: Value = client
        .get(format!("{}/v1/runs/{run}/logs", server.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect()
}

/// A server config (see [`write_config`]) with `server.shutdown_grace: grace`.
fn config_with_grace(dir: &std::path::Path, grace: &str) -> std::path::PathBuf {
    let config = write_config(dir, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "  workers: 2\n",
        &format!("  workers: 2\n  shutdown_grace: {grace}\n"),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// A client that keeps no idle connections, so none holds up the server's stop.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn sigterm_lets_the_step_in_flight_finish_and_the_run_completes_after_restart() {
    let target = Target::start().await;
    target.hold();
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(10);
    let config = config_with_grace(dir.path(), "10s");
    let mut server = ServerProcess::start(&config);
    let client = client();
    let run = start_slow_run(&server, &client, &target).await;
    target.wait_in_flight(1).await;

    let stopping = Instant::now();
    server.sigterm();
    server.wait_for_line("engine draining").await;
    assert!(
        server.wait_exit(Duration::ZERO).await.is_none(),
        "the server waits for the step in flight"
    );
    target.release();
    let status = server
        .wait_exit(grace + MARGIN)
        .await
        .expect("the server exits within the grace period and a margin");
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    assert!(stopping.elapsed() < grace + MARGIN);

    let server = ServerProcess::start(&config);
    let done = finished_run(&server, &client, &run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["context"]["done"], true);
    assert_eq!(
        target.requests().len(),
        1,
        "the step finished before the exit and did not run again"
    );
    let messages = log_messages(&server, &client, &run).await;
    let position = |text: &str| {
        messages
            .iter()
            .position(|m| m.contains(text))
            .unwrap_or_else(|| panic!("no {text:?} in {messages:#?}"))
    };
    let waiting = position("server shutting down: waiting up to 10000 ms for 1 step(s)");
    let finished = position("succeeded (HTTP 200)");
    let left = position("server shutting down: the run resumes on the next start");
    let resumed = position("run resumed on");
    assert!(
        waiting < finished && finished < left && left < resumed,
        "{messages:#?}"
    );
}

#[tokio::test]
async fn a_step_outliving_the_grace_period_is_cut_off_and_runs_again_after_restart() {
    let target = Target::start().await;
    target.hold();
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(1);
    let config = config_with_grace(dir.path(), "1s");
    let mut server = ServerProcess::start(&config);
    let client = client();
    let run = start_slow_run(&server, &client, &target).await;
    target.wait_in_flight(1).await;

    let stopping = Instant::now();
    server.sigterm();
    let status = server
        .wait_exit(grace + MARGIN)
        .await
        .expect("the server exits within the grace period and a margin");
    assert!(
        status.success(),
        "SIGTERM exits 0 even when a step is cut off: {status:?}"
    );
    assert!(
        stopping.elapsed() >= grace,
        "the step was given the grace period"
    );
    target.release();

    let server = ServerProcess::start(&config);
    let done = finished_run(&server, &client, &run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let keys: Vec<Option<String>> = target
        .requests()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    let key = Some(format!("{run}/slow"));
    assert_eq!(
        keys,
        [key.clone(), key],
        "the cut-off step ran again with the same key"
    );
    let messages = log_messages(&server, &client, &run).await;
    assert!(
        messages
            .iter()
            .any(|m| m.contains("1 step(s) still in flight after shutdown_grace")),
        "{messages:#?}"
    );
}

#[tokio::test]
async fn log_streams_follow_the_drain_and_end_with_a_shutdown_event() {
    let target = Target::start().await;
    target.hold();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir, |c| c.server.shutdown_grace = Duration::from_secs(10)).await;
    let wf = app.create_workflow(&slow_then_local(&target)).await;
    let run = app.start_run(&wf, json!({})).await;
    target.wait_in_flight(1).await;
    let mut stream: LogStream = app.log_stream(&run, None).await;
    let message = |e: &crate::helpers::SseEvent| -> String {
        let data: Value = serde_json::from_str(&e.data).unwrap();
        data["message"].as_str().unwrap_or_default().to_owned()
    };
    stream
        .until(|e| e.event == "log" && message(e).starts_with("started (http"))
        .await;

    let engine = app.engine.clone();
    let stopped = tokio::spawn(app.stop());
    stream
        .until(|e| e.event == "log" && message(e).contains("waiting up to 10000 ms"))
        .await;
    assert_eq!(engine.active_runs(), 1, "the run drains");
    drop(engine); // it holds the store, which the restart below reopens
    target.release();
    let mut rest = Vec::new();
    while let Some(event) = stream.next().await {
        rest.push(event);
    }
    let messages: Vec<String> = rest
        .iter()
        .filter(|e| e.event == "log")
        .map(message)
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("succeeded (HTTP 200)")),
        "the step's result reached the stream before it closed: {messages:#?}"
    );
    let last = rest.last().unwrap();
    assert_eq!(last.event, "shutdown", "{rest:?}");
    let data: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(data["run_status"], "RUNNING");
    let dir = stopped.await.unwrap();

    let app = spawn_app_in(dir, |_| {}).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(target.requests().len(), 1);
    let mut resumed = app
        .log_stream(&run, Some(data["last_seq"].as_u64().unwrap()))
        .await;
    let after = resumed.until_end().await;
    assert!(
        after
            .iter()
            .any(|e| e.event == "log" && message(e).starts_with("run resumed on")),
        "the stream resumes where the shutdown event left it"
    );
}

#[tokio::test]
async fn a_step_waiting_to_retry_does_not_hold_up_the_stop_and_retries_after_restart() {
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let downstream = MockServer::start().await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&downstream)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir, |c| c.server.shutdown_grace = Duration::from_secs(30)).await;
    let wf = app
        .create_workflow(&json!({"name": "flaky", "steps": [
            {"name": "flaky", "action": "http", "retry": {"max": 2, "backoff_ms": 2000},
             "input": {"url": format!("{}/flaky", downstream.uri())}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for(&run, "the first attempt to fail and wait", |r| {
        r["steps"][0]["attempts"][0]["retry_in_ms"] == 2000
    })
    .await;

    let stopping = Instant::now();
    let dir = app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the wait for a retry is not an attempt in flight: the stop does not sit out the 30 s grace"
    );

    let app = spawn_app_in(dir, |_| {}).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let attempts = done["steps"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{done}");
    assert_eq!(downstream.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_replica_that_stops_gracefully_hands_its_runs_to_another_at_once() {
    let target = Target::start().await;
    target.hold();
    let dsn = crate::pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    // A lease far longer than the test's bound: only a released run is taken over in time.
    let replica = |name: &str| {
        let path = dir.path().join(format!("{name}.yaml"));
        let text = format!(
            "server:\n  id: {name}\n  host: 127.0.0.1\n  port: 0\n  workers: 2\n  shutdown_grace: 1s\n\
             database:\n  dsn: {dsn}\n  pool_size: 4\n\
             engine:\n  poll_interval: 100ms\n  lease_ttl: 120s\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut first = ServerProcess::start(&replica("a"));
    let client = client();
    let run = start_slow_run(&first, &client, &target).await;
    target.wait_in_flight(1).await;
    let second = ServerProcess::start(&replica("b"));

    first.sigterm();
    let status = first
        .wait_exit(Duration::from_secs(1) + MARGIN)
        .await
        .expect("the first replica exits");
    assert!(status.success(), "{status:?}");
    target.release();
    // Within PATIENCE (20 s), long before the 120 s lease would have expired.
    let done = finished_run(&second, &client, &run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let keys: Vec<Option<String>> = target
        .requests()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    let key = Some(format!("{run}/slow"));
    assert_eq!(keys, [key.clone(), key]);
}
