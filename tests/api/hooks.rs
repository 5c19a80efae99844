//! Event hooks: every run and step event reaches `memarch` and `audit_log` once, in order
//! per run; a target that is down at first gets everything once it is up, across a restart
//! of the real binary too; and a target that takes 10 s to answer does not slow a run.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    ServerProcess, TestApp, bind_port, spawn_app_in, spawn_app_with, unused_port, wait_until,
    write_config,
};

/// A hook target answering 200 to every event, on `listener` when given.
async fn hook_server(listener: Option<std::net::TcpListener>) -> MockServer {
    let server = match listener {
        Some(l) => MockServer::builder().listener(l).start().await,
        None => MockServer::start().await,
    };
    Mock::given(method("POST"))
        .and(path("/v1/events"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// The events `server` received, as JSON bodies in arrival order.
async fn events(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/v1/events")
        .map(|r| r.body_json().unwrap())
        .collect()
}

/// Waits until `server` has received `n` events.
async fn wait_for_events(server: &MockServer, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} hook events"), || async {
        Some(events(server).await).filter(|e| e.len() >= n)
    })
    .await
}

/// `type` (and `:step`) of each event of `run_id`, in arrival order, checking that `seq`
/// counts 1, 2, 3… (so each arrived once, in order) and that each has the documented shape.
fn sequence(events: &[Value], run_id: &str) -> Vec<String> {
    let mine: Vec<&Value> = events.iter().filter(|e| e["run_id"] == run_id).collect();
    for (i, event) in mine.iter().enumerate() {
        assert_eq!(event["seq"], i as u64 + 1, "{mine:#?}");
        assert!(event["workflow_id"].is_string() && event["status"].is_string());
        let ts = event["ts"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }
    mine.iter()
        .map(|e| match e["step"].as_str() {
            Some(step) => format!("{}:{step}", e["type"].as_str().unwrap()),
            None => e["type"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn two_steps() -> Value {
    json!({"name": "two", "steps": [
        {"name": "a", "action": "transform", "input": {"set": {"a": 1}}},
        {"name": "b", "action": "transform", "input": {"set": {"b": 2}}}
    ]})
}

const TWO_STEPS_EVENTS: [&str; 6] = [
    "run.started",
    "step.started:a",
    "step.succeeded:a",
    "step.started:b",
    "step.succeeded:b",
    "run.succeeded",
];

async fn finished(app: &TestApp, workflow: &str) -> String {
    let run = app.start_run(workflow, json!({})).await;
    app.wait_until_finished(&run).await;
    run
}

#[tokio::test]
async fn every_event_arrives_once_in_order_per_run_at_both_targets() {
    let downstream = MockServer::start().await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&downstream)
        .await;
    let (memarch, audit) = (hook_server(None).await, hook_server(None).await);
    let app = spawn_app_with(|raw| {
        raw.memarch.base_url = memarch.uri();
        raw.memarch.headers = [("Authorization".to_owned(), "Bearer mem".to_owned())].into();
        raw.audit_log.base_url = audit.uri();
        raw.hooks.poll_interval = Duration::from_millis(50);
    })
    .await;
    let gated = app
        .create_workflow(&json!({"name": "gated", "steps": [
            {"name": "fetch", "action": "http", "retry": {"max": 1, "backoff_ms": 10},
             "input": {"url": format!("{}/flaky", downstream.uri())}},
            {"name": "review", "action": "transform", "requires_approval": true, "input": {"value": 1}}
        ]}))
        .await;
    let failing = app
        .create_workflow(&json!({"name": "failing", "steps": [
            {"name": "check", "action": "condition", "input": {"key": "go", "equals": true, "on_false": "fail"}}
        ]}))
        .await;
    let approved = app.start_run(&gated, json!({})).await;
    app.wait_for_status(&approved, "WAITING_APPROVAL").await;
    let url = format!("/v1/runs/{approved}/approve");
    assert_eq!(app.post(&url, &json!({})).await.status(), 200);
    app.wait_for_status(&approved, "SUCCEEDED").await;
    let failed = finished(&app, &failing).await;
    let canceled = app.start_run(&gated, json!({})).await;
    app.wait_for_status(&canceled, "WAITING_APPROVAL").await;
    let url = format!("/v1/runs/{canceled}/cancel");
    assert_eq!(app.post(&url, &json!({})).await.status(), 200);

    for server in [&memarch, &audit] {
        let received = wait_for_events(server, 17).await;
        assert_eq!(
            sequence(&received, &approved),
            [
                "run.started",
                "step.started:fetch",
                "step.retrying:fetch",
                "step.succeeded:fetch",
                "run.waiting_approval",
                "step.started:review",
                "step.succeeded:review",
                "run.succeeded"
            ]
        );
        let expected = [
            "run.started",
            "step.started:check",
            "step.failed:check",
            "run.failed",
        ];
        assert_eq!(sequence(&received, &failed), expected);
        let expected = [
            "run.started",
            "step.started:fetch",
            "step.succeeded:fetch",
            "run.waiting_approval",
            "run.canceled",
        ];
        assert_eq!(sequence(&received, &canceled), expected);
        assert_eq!(received.len(), 17, "no event twice, none extra");
    }
    let request = &memarch.received_requests().await.unwrap()[0];
    assert_eq!(request.headers["authorization"], "Bearer mem");
    let first = &events(&memarch).await[0];
    let key = format!(
        "{}/events/{}",
        first["run_id"].as_str().unwrap(),
        first["seq"]
    );
    assert_eq!(request.headers["idempotency-key"], key.as_str());
    assert_eq!(first["workflow_id"], gated);
    assert_eq!(first["status"], "RUNNING");
    // Received is not yet acknowledged: wait for the responses to be counted.
    let counts = wait_until("both targets to count 17 deliveries", || async {
        let counts = app.hooks.counts();
        counts.iter().all(|c| c.delivered >= 17).then_some(counts)
    })
    .await;
    assert_eq!(counts.len(), 2);
    for count in counts {
        assert_eq!(
            (count.delivered, count.failures, count.dropped),
            (17, 0, 0),
            "{count:?}"
        );
    }
}

#[tokio::test]
async fn a_target_down_at_first_gets_every_event_once_it_is_up() {
    let port = unused_port();
    let app = spawn_app_with(|raw| {
        raw.memarch.base_url = format!("http://127.0.0.1:{port}");
        raw.hooks.poll_interval = Duration::from_millis(50);
        raw.hooks.backoff = Duration::from_millis(50);
        raw.hooks.max_backoff = Duration::from_millis(200);
    })
    .await;
    let wf = app.create_workflow(&two_steps()).await;
    let first = finished(&app, &wf).await;
    wait_until("failed deliveries while the target is down", || async {
        (app.hooks.counts()[0].failures >= 2).then_some(())
    })
    .await;
    let memarch = hook_server(Some(bind_port(port).await)).await;
    let received = wait_for_events(&memarch, 6).await;
    assert_eq!(sequence(&received, &first), TWO_STEPS_EVENTS);
    let second = finished(&app, &wf).await;
    let received = wait_for_events(&memarch, 12).await;
    assert_eq!(sequence(&received, &second), TWO_STEPS_EVENTS);
    assert_eq!(received.len(), 12);
    wait_until("12 deliveries to be counted", || async {
        (app.hooks.counts()[0].delivered == 12).then_some(())
    })
    .await;
}

#[tokio::test]
async fn acknowledged_events_are_not_sent_again_after_a_restart() {
    let memarch = hook_server(None).await;
    let configure = |raw: &mut orchestrator::config::RawConfig| {
        raw.memarch.base_url = memarch.uri();
        raw.hooks.poll_interval = Duration::from_millis(50);
    };
    let app = spawn_app_with(configure).await;
    let wf = app.create_workflow(&two_steps()).await;
    let before = finished(&app, &wf).await;
    wait_for_events(&memarch, 6).await;
    let last_id = app
        .store
        .read_events(0, 100)
        .await
        .unwrap()
        .last()
        .unwrap()
        .id;
    wait_until("the cursor to be recorded", || async {
        let cursor = app.store.event_cursor("memarch").await.unwrap();
        (cursor == last_id).then_some(())
    })
    .await;
    let dir = app.stop().await;
    let app = spawn_app_in(dir, configure).await;
    let after = finished(&app, &wf).await;
    let received = wait_for_events(&memarch, 12).await;
    assert_eq!(sequence(&received, &before), TWO_STEPS_EVENTS);
    assert_eq!(sequence(&received, &after), TWO_STEPS_EVENTS);
    assert_eq!(received.len(), 12);
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    client
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Runs the two-step workflow on `server` until it is finished; returns the run id.
async fn run_on(server: &ServerProcess, client: &reqwest::Client) -> String {
    let wf = post(
        client,
        format!("{}/v1/workflows", server.address),
        two_steps(),
    )
    .await;
    let body = json!({"workflow_id": wf["id"]});
    let run = post(client, format!("{}/v1/runs", server.address), body).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/runs/{id}", server.address);
    wait_until("the run to finish", || async {
        let run: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
        (run["status"] == "SUCCEEDED").then_some(())
    })
    .await;
    id
}

#[tokio::test]
async fn events_of_a_stopped_server_are_delivered_after_its_restart() {
    let port = unused_port();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "memarch:\n  base_url: http://127.0.0.1:{port}\n  headers:\n    Authorization: Bearer ${{ORCH_HOOK_TEST_TOKEN:-hook-secret}}\n\
         hooks:\n  poll_interval: 50ms\n  backoff: 50ms\n  max_backoff: 200ms\n"
    );
    let config = write_config(dir.path(), &extra);
    let client = reqwest::Client::new();
    // The target is down for the whole life of the first server.
    let server = ServerProcess::start(&config);
    let before = run_on(&server, &client).await;
    assert!(server.terminate().success());

    let memarch = hook_server(Some(bind_port(port).await)).await;
    let server = ServerProcess::start(&config);
    let received = wait_for_events(&memarch, 6).await;
    assert_eq!(sequence(&received, &before), TWO_STEPS_EVENTS);
    let after = run_on(&server, &client).await;
    let received = wait_for_events(&memarch, 12).await;
    assert_eq!(sequence(&received, &after), TWO_STEPS_EVENTS);
    assert_eq!(received.len(), 12);
    let request = &memarch.received_requests().await.unwrap()[0];
    assert_eq!(request.headers["authorization"], "Bearer hook-secret");
}

/// Milliseconds from a run's creation to its end, as the server recorded them.
fn duration_ms(run: &Value) -> i64 {
    let at =
        |field: &str| chrono::DateTime::parse_from_rfc3339(run[field].as_str().unwrap()).unwrap();
    (at("finished_at") - at("created_at")).num_milliseconds()
}

async fn timed_run(app: &TestApp) -> i64 {
    let steps: Vec<Value> = (0..5)
        .map(
            |i| json!({"name": format!("s{i}"), "action": "transform", "input": {"set": {"n": i}}}),
        )
        .collect();
    let wf = app
        .create_workflow(&json!({"name": "timed", "steps": steps}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    duration_ms(&done)
}

#[tokio::test]
async fn a_hook_that_takes_ten_seconds_does_not_slow_a_run() {
    let baseline_app = spawn_app_with(|_| {}).await;
    let baseline = timed_run(&baseline_app).await;
    baseline_app.stop().await;

    let sleepy = MockServer::start().await;
    Mock::given(path("/v1/events"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
        .mount(&sleepy)
        .await;
    let app = spawn_app_with(|raw| {
        raw.memarch.base_url = sleepy.uri();
        raw.audit_log.base_url = sleepy.uri();
        raw.hooks.poll_interval = Duration::from_millis(20);
    })
    .await;
    let hooked = timed_run(&app).await;
    // The hook was being called (and not answering) while the run went on.
    wait_until("a hook call in flight", || async {
        (!events(&sleepy).await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(app.hooks.counts()[0].delivered, 0);
    eprintln!("run with a sleeping hook: {hooked} ms; without hooks: {baseline} ms");
    assert!(
        hooked < baseline + 2_000 && hooked < 5_000,
        "with a sleeping hook the run took {hooked} ms, without hooks {baseline} ms"
    );
    let counts: BTreeMap<_, _> = app
        .hooks
        .counts()
        .into_iter()
        .map(|c| (c.target, c))
        .collect();
    assert_eq!(counts.len(), 2);
    app.stop().await; // abandons the sleeping calls at once
}
