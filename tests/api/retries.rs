//! Retries: attempts and their recorded delays, classes that retry or fail at once,
//! Retry-After, deadlines, and `POST /v1/runs/{id}/retry`.

use serde_json::{Value, json};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::spawn_app;

fn attempts(run: &Value, step: usize) -> Vec<Value> {
    run["steps"][step]["attempts"].as_array().unwrap().clone()
}

fn delays(run: &Value, step: usize) -> Vec<Option<u64>> {
    attempts(run, step)
        .iter()
        .map(|a| a["retry_in_ms"].as_u64())
        .collect()
}

async fn one_step(app: &crate::helpers::TestApp, url: String, retry: Value) -> Value {
    let wf = app
        .create_workflow(&json!({"name": "retrying", "steps": [
            {"name": "call", "action": "http", "input": {"url": url}, "retry": retry}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_until_finished(&run).await
}

#[tokio::test]
async fn server_errors_are_retried_with_a_growing_recorded_backoff() {
    let downstream = MockServer::start().await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": 1})))
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let url = format!("{}/flaky", downstream.uri());
    let done = one_step(
        &app,
        url,
        json!({"max": 4, "backoff_ms": 20, "multiplier": 3}),
    )
    .await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let tries = attempts(&done, 0);
    assert_eq!(tries.len(), 4);
    assert_eq!(
        tries
            .iter()
            .map(|a| a["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(
        tries
            .iter()
            .map(|a| a["http_code"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [503, 503, 503, 200]
    );
    assert_eq!(delays(&done, 0), [Some(20), Some(60), Some(180), None]);
    assert!(tries[0]["error"].as_str().unwrap().contains("HTTP 503"));
    assert_eq!(downstream.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn max_counts_retries_after_the_first_attempt() {
    let downstream = MockServer::start().await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let done = one_step(
        &app,
        format!("{}/down", downstream.uri()),
        json!({"max": 2, "backoff_ms": 1}),
    )
    .await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(attempts(&done, 0).len(), 3);
    assert!(
        done["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{done}"
    );
}

#[tokio::test]
async fn client_errors_fail_at_once() {
    let downstream = MockServer::start().await;
    Mock::given(path("/nope"))
        .respond_with(ResponseTemplate::new(422))
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let done = one_step(
        &app,
        format!("{}/nope", downstream.uri()),
        json!({"max": 5, "backoff_ms": 1}),
    )
    .await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(attempts(&done, 0).len(), 1);
    assert_eq!(done["steps"][0]["http_code"], 422);
}

#[tokio::test]
async fn retry_on_replaces_the_default_classes() {
    let downstream = MockServer::start().await;
    Mock::given(path("/later"))
        .respond_with(ResponseTemplate::new(404))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/later"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&downstream)
        .await;
    Mock::given(path("/busy"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let done = one_step(
        &app,
        format!("{}/later", downstream.uri()),
        json!({"max": 2, "backoff_ms": 1, "retry_on": ["404"]}),
    )
    .await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(attempts(&done, 0).len(), 2);
    let done = one_step(
        &app,
        format!("{}/busy", downstream.uri()),
        json!({"max": 2, "backoff_ms": 1, "retry_on": ["timeout"]}),
    )
    .await;
    assert_eq!(attempts(&done, 0).len(), 1, "503 is not in retry_on");
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_max_backoff() {
    let downstream = MockServer::start().await;
    Mock::given(path("/limited"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/limited"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&downstream)
        .await;
    Mock::given(path("/capped"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/capped"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let done = one_step(
        &app,
        format!("{}/limited", downstream.uri()),
        json!({"max": 1, "backoff_ms": 10, "max_backoff_ms": 5000}),
    )
    .await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(delays(&done, 0), [Some(1000), None]);
    let done = one_step(
        &app,
        format!("{}/capped", downstream.uri()),
        json!({"max": 1, "backoff_ms": 10, "max_backoff_ms": 50}),
    )
    .await;
    assert_eq!(delays(&done, 0), [Some(50), None]);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_retried() {
    let downstream = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(10)))
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&json!({"name": "t", "steps": [
            {"name": "slow", "action": "http", "timeout_ms": 100, "on_failure": "continue",
             "input": {"url": format!("{}/slow", downstream.uri())}, "retry": {"max": 1, "backoff_ms": 1}},
            {"name": "closed", "action": "http", "input": {"url": "http://127.0.0.1:1/"}, "retry": {"max": 1, "backoff_ms": 1}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(attempts(&done, 0).len(), 2);
    assert!(
        attempts(&done, 0)[0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 100 ms"),
        "{done}"
    );
    assert_eq!(attempts(&done, 1).len(), 2);
    assert_eq!(done["steps"][1]["status"], "FAILED");
}

#[tokio::test]
async fn no_retry_starts_past_the_deadline() {
    let downstream = MockServer::start().await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let retry = json!({"max": 50, "backoff_ms": 100, "multiplier": 1, "deadline_ms": 350});
    let done = one_step(&app, format!("{}/down", downstream.uri()), retry).await;
    let n = attempts(&done, 0).len();
    assert!(
        (3..=4).contains(&n),
        "100 ms apart within 350 ms: {n} attempts"
    );
    assert!(
        done["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("deadline_ms 350"),
        "{done}"
    );
}

#[tokio::test]
async fn retry_reruns_a_failed_run_from_its_failed_step() {
    let downstream = MockServer::start().await;
    Mock::given(path("/first"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"n": 1})))
        .expect(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/second"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/second"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"n": 2})))
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let url = |p: &str| format!("{}{p}", downstream.uri());
    let wf = app
        .create_workflow(&json!({"name": "retryable", "steps": [
            {"name": "first", "action": "http", "input": {"url": url("/first")}},
            {"name": "second", "action": "http", "input": {"url": url("/second"), "body": {"from": "{{ steps.first.output.body.n }}"}}},
            {"name": "third", "action": "transform", "input": {"set": {"sum": "{{ steps.first.output.body.n + steps.second.output.body.n }}"}}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let failed = app.wait_until_finished(&run).await;
    assert_eq!(failed["status"], "FAILED");
    let conflict = app
        .post(&format!("/v1/runs/{run}/approve"), &json!({}))
        .await;
    assert_eq!(conflict.status(), 409);
    let response = app.post(&format!("/v1/runs/{run}/retry"), &json!({})).await;
    assert_eq!(response.status(), 200);
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["context"]["sum"], 3);
    assert_eq!(
        attempts(&done, 0).len(),
        1,
        "the first step's output was kept"
    );
    assert_eq!(
        app.post(&format!("/v1/runs/{run}/retry"), &json!({}))
            .await
            .status(),
        409,
        "only FAILED runs retry"
    );
}
