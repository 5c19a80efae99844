//! Configured limits: request bodies (`413` on every route that reads one, JSON, YAML and
//! text alike), steps per workflow, input and context sizes (`400` with a pointer, or a
//! failed step at run time), outputs kept per step (truncated and flagged, never stored
//! whole), runs executing at once (the rest queue as `PENDING`), and open log streams.

use serde_json::{Value, json};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{LogStream, Target, TestApp, spawn_app, spawn_app_with, wait_until};

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    body
}

fn pointers(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|v| v["pointer"].as_str()).collect())
        .unwrap_or_default()
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    at: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.client
        .request(method, app.url(at))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_on_every_route_that_reads_one() {
    let app = spawn_app_with(|c| {
        c.limits.body_bytes = 4096;
        c.logs.body_bytes = 4096;
    })
    .await;
    let wf = app
        .create_workflow(&json!({"id": "gate", "name": "gate", "steps": [
            {"name": "wait", "action": "transform", "requires_approval": true, "input": {"set": {"a": 1}}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;

    let big = "x".repeat(5000);
    let json_body = serde_json::to_vec(&json!({"name": "w", "description": big})).unwrap();
    let yaml_body = format!("name: w\ndescription: {big}\n");
    use reqwest::Method;
    let json_routes = [
        (Method::POST, "/v1/workflows".to_owned()),
        (Method::PUT, "/v1/workflows/gate".to_owned()),
        (Method::POST, "/v1/workflows/validate".to_owned()),
        (Method::POST, "/v1/workflows/gate/rollback".to_owned()),
        (Method::POST, "/v1/templates".to_owned()),
        (Method::POST, "/v1/runs".to_owned()),
        (Method::POST, format!("/v1/runs/{run}/approve")),
        (Method::POST, format!("/v1/runs/{run}/reject")),
    ];
    for (method, at) in &json_routes {
        let p = problem(
            send(
                &app,
                method.clone(),
                at,
                "application/json",
                json_body.clone(),
            )
            .await,
            413,
        )
        .await;
        assert!(
            p["detail"].as_str().unwrap().contains("4096"),
            "{method} {at}: {p}"
        );
        problem(
            send(
                &app,
                method.clone(),
                at,
                "application/yaml",
                yaml_body.clone(),
            )
            .await,
            413,
        )
        .await;
    }
    // Without Content-Length (chunked), the limit holds while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        json_body.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    problem(
        send(
            &app,
            Method::POST,
            "/v1/workflows",
            "application/json",
            streamed,
        )
        .await,
        413,
    )
    .await;
    let text = problem(
        send(
            &app,
            Method::POST,
            &format!("/v1/runs/{run}/logs"),
            "text/plain",
            big.clone(),
        )
        .await,
        413,
    )
    .await;
    assert!(text["detail"].as_str().unwrap().contains("4096"), "{text}");

    let list: Value = app.get("/v1/workflows").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "nothing stored");
    assert_eq!(app.run(&run).await["status"], "WAITING_APPROVAL");
}

#[tokio::test]
async fn a_workflow_with_too_many_steps_is_refused_at_steps() {
    let app = spawn_app_with(|c| c.limits.max_steps = 10).await;
    let step = |n: usize| json!({"name": format!("s{n}"), "action": "transform", "input": {"set": {"n": n}}});
    let steps: Vec<Value> = (0..11).map(step).collect();
    let p = problem(
        app.post("/v1/workflows", &json!({"name": "w", "steps": steps}))
            .await,
        400,
    )
    .await;
    assert_eq!(pointers(&p), ["/steps"], "{p}");
    assert!(
        p.to_string().contains("11 steps exceed the limit of 10"),
        "{p}"
    );
    let steps: Vec<Value> = (0..10).map(step).collect();
    app.create_workflow(&json!({"name": "w", "steps": steps}))
        .await;
}

#[tokio::test]
async fn inputs_and_contexts_over_their_limits_are_refused_with_a_pointer() {
    let app = spawn_app_with(|c| {
        c.limits.max_input_bytes = 1024;
        c.limits.max_context_bytes = 2048;
    })
    .await;
    let p = problem(
        app.post(
            "/v1/workflows",
            &json!({"name": "w", "steps": [
                {"name": "ok", "action": "transform", "input": {"set": {"a": 1}}},
                {"name": "big", "action": "transform", "input": {"set": {"a": "y".repeat(1100)}}}
            ]}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(pointers(&p), ["/steps/1/input"], "{p}");

    let wf = app
        .create_workflow(&json!({"name": "gate", "steps": [
            {"name": "wait", "action": "transform", "requires_approval": true, "input": {"set": {"a": 1}}}
        ]}))
        .await;
    let p = problem(
        app.post(
            "/v1/runs",
            &json!({"workflow_id": wf, "context": {"s": "z".repeat(2100)}}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(pointers(&p), ["/context"], "{p}");
    assert!(p["detail"].as_str().unwrap().contains("max_context_bytes"));

    let run = app.start_run(&wf, json!({"s": "z".repeat(1500)})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    let p = problem(
        app.post(
            &format!("/v1/runs/{run}/approve"),
            &json!({"input": {"more": "m".repeat(600)}}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(pointers(&p), ["/input"], "{p}");
    let still = app.run(&run).await;
    assert_eq!(still["status"], "WAITING_APPROVAL");
    assert_eq!(still["approvals"], json!([]), "no decision was recorded");
    assert!(still["context"].get("more").is_none());
    app.approve(&run).await;
    app.wait_for_status(&run, "SUCCEEDED").await;
}

#[tokio::test]
async fn steps_that_would_exceed_the_input_or_context_limit_at_run_time_fail() {
    let app = spawn_app_with(|c| {
        c.limits.max_input_bytes = 1024;
        c.limits.max_context_bytes = 2048;
    })
    .await;
    let wf = app
        .create_workflow(&json!({"name": "grow", "steps": [
            {"name": "twice", "action": "transform", "on_failure": "continue",
             "input": {"value": "{{ context.s }}{{ context.s }}"}},
            {"name": "copy", "action": "transform", "input": {"set": {"copy": "{{ context.s }}"}}},
            {"name": "again", "action": "transform", "input": {"set": {"again": "{{ context.s }}"}}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({"s": "z".repeat(700)})).await;
    let run = app.wait_until_finished(&run).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    let error = |i: usize| run["steps"][i]["error"].as_str().unwrap().to_owned();
    assert!(
        error(0).contains("rendered input is") && error(0).contains("max_input_bytes (1024)"),
        "{}",
        error(0)
    );
    assert_eq!(run["steps"][1]["status"], "SUCCEEDED");
    assert!(
        error(2).contains("max_context_bytes (2048)"),
        "{}",
        error(2)
    );
    assert!(
        run["context"].get("copy").is_some() && run["context"].get("again").is_none(),
        "the failed merge left the context as it was"
    );
}

#[tokio::test]
async fn large_outputs_are_stored_truncated_and_flagged_for_later_steps() {
    let downstream = MockServer::start().await;
    let big = json!({"items": vec!["0123456789"; 2000]});
    let big_len = serde_json::to_vec(&big).unwrap().len();
    Mock::given(path("/big"))
        .respond_with(ResponseTemplate::new(200).set_body_json(big))
        .mount(&downstream)
        .await;
    let app = spawn_app_with(|c| c.limits.max_output_bytes = 2048).await;
    let wf = app
        .create_workflow(&json!({"name": "big", "steps": [
            {"name": "fetch", "action": "http", "input": {"method": "GET", "url": format!("{}/big", downstream.uri())}},
            {"name": "value", "action": "transform", "input": {"value": "{{ context.s }}"}},
            {"name": "seen", "action": "transform", "input": {"set": {
                "status": "{{ steps.fetch.output.status }}",
                "body_cut": "{{ steps.fetch.output.body.truncated }}",
                "body_bytes": "{{ steps.fetch.output.body.original_bytes }}",
                "value_cut": "{{ steps.value.output.truncated }}",
                "preview": "{{ steps.value.output.preview[:5] }}"
            }}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({"s": "v".repeat(3000)})).await;
    let run = app.wait_for_status(&run, "SUCCEEDED").await;
    let fetched = &run["steps"][0]["output"];
    assert_eq!(fetched["status"], 200);
    assert_eq!(fetched["body"]["truncated"], true, "{fetched}");
    assert_eq!(fetched["body"]["original_bytes"], big_len);
    assert!(
        fetched["body"]["preview"]
            .as_str()
            .unwrap()
            .starts_with("{\"items\":[\"0123456789\"")
    );
    let value = &run["steps"][1]["output"];
    assert_eq!(value["truncated"], true, "{value}");
    assert_eq!(value["original_bytes"], 3002);
    assert!(serde_json::to_vec(&run["steps"]).unwrap().len() < 6000);
    assert_eq!(
        run["context"],
        json!({"s": "v".repeat(3000), "status": 200, "body_cut": true,
               "body_bytes": big_len, "value_cut": true, "preview": "vvvvv"})
    );
    let logs = app.logs(run["id"].as_str().unwrap()).await;
    let notes: Vec<&str> = logs
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with("output truncated"))
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains(&format!("response body of {big_len} bytes")));
    assert!(notes[1].contains("3002 bytes"));
}

#[tokio::test]
async fn at_most_max_active_runs_execute_at_once_and_the_rest_queue_until_a_slot_frees() {
    let target = Target::start().await;
    target.hold();
    let app = spawn_app_with(|c| c.engine.max_active_runs = 2).await;
    let wf = app
        .create_workflow(&json!({"name": "slow", "steps": [
            {"name": "call", "action": "http", "input": {"url": target.url("/slow")}}
        ]}))
        .await;
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(app.start_run(&wf, json!({})).await);
    }
    target.wait_in_flight(2).await;
    let statuses = |list: Value| -> Vec<String> {
        let mut s: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap().to_owned())
            .collect();
        s.sort();
        s
    };
    let list: Value = app.get("/v1/runs").await.json().await.unwrap();
    assert_eq!(
        statuses(list),
        ["PENDING", "PENDING", "PENDING", "RUNNING", "RUNNING"],
        "two execute, three queue"
    );
    assert_eq!(target.in_flight(), 2);
    target.release();
    for run in &runs {
        assert_eq!(app.wait_until_finished(run).await["status"], "SUCCEEDED");
    }
    assert_eq!(target.requests().len(), 5);
    assert_eq!(target.max_in_flight(), 2, "never more than two at once");
}

#[tokio::test]
async fn log_streams_beyond_the_limit_are_refused_with_503_and_retry_after() {
    // A closed stream is noticed when a write to it fails: keep-alives every second
    // make that happen well within the test's patience (the default is every 15 s).
    let app = spawn_app_with(|c| {
        c.logs.max_streams = 1;
        c.logs.keep_alive = std::time::Duration::from_secs(1);
    })
    .await;
    let wf = app
        .create_workflow(&json!({"name": "gate", "steps": [
            {"name": "wait", "action": "transform", "requires_approval": true, "input": {"set": {"a": 1}}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let first = app.log_stream(&run, None).await;
    let refused = app.log_stream_response(&run, None).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let p = problem(refused, 503).await;
    assert!(
        p["detail"].as_str().unwrap().contains("1 log streams"),
        "{p}"
    );
    drop(first);
    let again: LogStream = wait_until("the closed stream's slot to free", || async {
        let response = app.log_stream_response(&run, None).await;
        (response.status() == 200).then(|| LogStream::new(response))
    })
    .await;
    drop(again);
}

#[tokio::test]
async fn the_openapi_document_lists_413_on_every_route_that_reads_a_body() {
    let app = spawn_app().await;
    let doc: Value = app.get("/v1/openapi.json").await.json().await.unwrap();
    for (method, path) in [
        ("post", "/v1/workflows"),
        ("put", "/v1/workflows/{id}"),
        ("post", "/v1/workflows/validate"),
        ("post", "/v1/workflows/{id}/rollback"),
        ("post", "/v1/templates"),
        ("post", "/v1/runs"),
        ("post", "/v1/runs/{id}/approve"),
        ("post", "/v1/runs/{id}/reject"),
        ("post", "/v1/runs/{id}/logs"),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        assert!(
            responses.get("413").is_some(),
            "{method} {path}: {responses}"
        );
    }
}
