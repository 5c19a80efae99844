//! Text a store cannot hold as it came: NUL characters in what a downstream answers and what
//! a client sends. PostgreSQL's `text` holds no NUL, and one such character used to fail every
//! commit of the run that met it there (the run never ended). Both stores now keep U+FFFD in
//! its place, and JSON bodies holding NUL are refused at the place they hold it.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::stores::{Store, on_both_stores, spawn_on};

on_both_stores!(nul_characters_from_downstreams_and_clients_are_kept_alike_and_runs_end);

async fn nul_characters_from_downstreams_and_clients_are_kept_alike_and_runs_end(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let downstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/value"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"v": "x\u{0}y"})))
        .mount(&downstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/fail"))
        .respond_with(ResponseTemplate::new(500).set_body_string("bad\0body"))
        .mount(&downstream)
        .await;
    let get = |name: &str, at: &str| {
        json!({"name": name, "action": "http", "retry": {"max": 1, "backoff_ms": 10},
               "input": {"method": "GET", "url": format!("{}{at}", downstream.uri())}})
    };
    let definition = |key: &str| {
        json!({"name": "nul", "steps": [
            get("fetch", "/value"),
            {"name": "keep", "action": "transform",
             "input": {"set": {key: "{{ steps.fetch.output.body.v }}"}}},
            get("call", "/fail"),
        ]})
    };
    let refused = app.post("/v1/workflows", &definition("v\u{0}")).await;
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(
        problem["errors"][0]["pointer"], "/steps/1/input/set/v\u{0}",
        "{problem}"
    );
    let wf = app.create_workflow(&definition("v")).await;
    let run = app.start_run(&wf, json!({})).await;
    let ended = app.wait_until_finished(&run).await;
    assert_eq!(ended["status"], "FAILED", "{ended}");
    assert_eq!(ended["context"]["v"], "x\u{FFFD}y", "{ended}");
    let posted = app.post_log_lines(&run, "a\0b").await;
    assert_eq!(posted.status(), 201);
    let messages: Vec<String> = app
        .logs(&run)
        .await
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("response: bad\u{FFFD}body")),
        "{messages:?}"
    );
    assert!(messages.iter().any(|m| m == "a\u{FFFD}b"), "{messages:?}");
    assert!(messages.iter().all(|m| !m.contains('\0')));

    let refused = app
        .post(
            "/v1/runs",
            &json!({"workflow_id": wf, "context": {"ok": 1, "k": ["fine", "v\u{0}"]}}),
        )
        .await;
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/context/k/1", "{problem}");
}
