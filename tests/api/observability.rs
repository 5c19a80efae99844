//! Operating the server: Prometheus metrics after real runs, and request ids.

use std::collections::BTreeMap;

use serde_json::json;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::auth::{ADMIN, READER, secured};
use crate::helpers::{TestApp, spawn_app, spawn_app_with, unused_port, wait_until};

/// One sample of the text exposition: `name{labels}` → value.
type Samples = BTreeMap<String, f64>;

/// Parses the Prometheus text format (comments skipped, labels kept as written).
fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

async fn scrape(app: &TestApp) -> Samples {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
    parse(&response.text().await.unwrap())
}

fn value(samples: &Samples, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_runs_steps_retries_requests_and_store_calls() {
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
    // A hook target that is down: its events stay in the outbox.
    let down = format!("http://127.0.0.1:{}", unused_port());
    let app = spawn_app_with(|raw| raw.memarch.base_url = down).await;
    let wf = app
        .create_workflow(&json!({"name": "measured", "steps": [
            {"name": "call", "action": "http", "input": {"url": format!("{}/flaky", downstream.uri())},
             "retry": {"max": 2, "backoff_ms": 10}},
            {"name": "gate", "action": "condition", "input": {"if": "false", "on_false": "continue"}},
            {"name": "skipped", "action": "transform", "when": "false", "input": {"value": 1}},
            {"name": "wait", "action": "transform", "depends_on": ["gate"], "requires_approval": true, "input": {"value": 2}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    let parked = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&parked, "WAITING_APPROVAL").await;
    app.approve(&run).await;
    app.wait_for_status(&run, "SUCCEEDED").await;
    app.get(&format!("/v1/runs/{run}")).await;
    let stream = app.log_stream_response(&parked, None).await;
    assert_eq!(stream.status(), 200);

    let samples = wait_until("the finished run to be counted", || async {
        let samples = scrape(&app).await;
        (value(&samples, "orchestrator_runs_total{status=\"succeeded\"}") == 1.0).then_some(samples)
    })
    .await;
    let expect = [
        ("orchestrator_runs_started_total", 2.0),
        (
            "orchestrator_steps_total{action=\"http\",outcome=\"succeeded\"}",
            2.0,
        ),
        (
            "orchestrator_steps_total{action=\"condition\",outcome=\"succeeded\"}",
            2.0,
        ),
        (
            "orchestrator_steps_total{action=\"transform\",outcome=\"skipped\"}",
            2.0,
        ),
        (
            "orchestrator_steps_total{action=\"transform\",outcome=\"succeeded\"}",
            1.0,
        ),
        ("orchestrator_step_retries_total{action=\"http\"}", 1.0),
        (
            "orchestrator_step_duration_seconds_count{action=\"http\"}",
            2.0,
        ),
        ("orchestrator_runs_parked", 1.0),
        ("orchestrator_sse_subscribers", 1.0),
        (
            "orchestrator_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/runs\",status=\"201\"}",
            2.0,
        ),
    ];
    for (series, expected) in expect {
        assert_eq!(
            value(&samples, series),
            expected,
            "{series} in {samples:#?}"
        );
    }
    assert!(samples.contains_key("orchestrator_runs_active"));
    assert!(
        value(
            &samples,
            "orchestrator_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/runs/{id}\",status=\"200\"}"
        ) >= 1.0
    );
    assert!(
        value(
            &samples,
            "orchestrator_hook_outbox_depth{target=\"memarch\"}"
        ) >= 8.0,
        "{samples:#?}"
    );
    assert!(
        value(
            &samples,
            "orchestrator_store_operation_duration_seconds_count{operation=\"commit\"}"
        ) > 0.0
    );
    assert!(
        samples
            .contains_key("orchestrator_step_duration_seconds_bucket{action=\"http\",le=\"+Inf\"}")
    );
    assert!(
        !samples.keys().any(|k| k.contains(&run)),
        "raw paths never become labels"
    );
}

#[tokio::test]
async fn metrics_need_a_token_when_auth_is_on_and_a_reader_suffices() {
    let app = secured().await;
    let anonymous = reqwest::Client::new()
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let reader = TestApp::client_with_token(READER)
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 200);
    let text = TestApp::client_with_token(ADMIN)
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse(&text);
    assert_eq!(
        value(
            &samples,
            "orchestrator_http_request_duration_seconds_count{method=\"GET\",route=\"/metrics\",status=\"401\"}"
        ),
        1.0,
        "refusals are measured too"
    );
}

#[tokio::test]
async fn a_sane_request_id_is_echoed_and_others_are_replaced() {
    let app = spawn_app().await;
    let given = app
        .client
        .get(app.url("/health"))
        .header("X-Request-Id", "client-id_1.2:3")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "client-id_1.2:3");

    let generated = app.get("/v1/runs/run_unknown").await;
    assert_eq!(generated.status(), 404);
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    let again = app.get("/v1/runs/run_unknown").await;
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), id);

    for odd in ["has spaces", "semi;colon", &"x".repeat(200)] {
        let response = app
            .client
            .get(app.url("/health"))
            .header("X-Request-Id", odd)
            .send()
            .await
            .unwrap();
        let echoed = response.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(echoed, odd);
        assert_eq!(echoed.len(), 26);
    }
}

#[tokio::test]
async fn refusals_carry_a_request_id_too() {
    let app = secured().await;
    let response = reqwest::Client::new()
        .get(app.url("/v1/workflows"))
        .header("X-Request-Id", "trace-me")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-request-id"], "trace-me");
}
