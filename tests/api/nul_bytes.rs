//! Text a store cannot hold as it came: NUL characters in what a downstream answers and what
//! a client sends. PostgreSQL's `text` holds no NUL, and one such character used to fail every
//! commit of the run that met it there (the run never ended). Both stores now keep U+FFFD in
//! its place, and JSON bodies holding NUL are refused at the place they hold it.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::stores::{Store, on_both_stores, spawn_on};

on_both_stores!(
    nul_characters_from_downstreams_and_clients_are_kept_alike_and_runs_end,
    a_nul_in_a_path_or_query_is_answered_as_bad_input_not_as_a_store_failure,
);

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

/// PostgreSQL refuses a NUL in any text it is sent (`503` from the store before the check),
/// so an id or filter holding one is refused before it reaches a store.
async fn a_nul_in_a_path_or_query_is_answered_as_bad_input_not_as_a_store_failure(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let wf = app
        .create_workflow(&json!({"name": "n", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}}]}))
        .await;
    let run = app.start_run(&wf, json!({"k": "v"})).await;
    app.wait_until_finished(&run).await;
    let gets = [
        "/v1/runs/run%00x".to_owned(),
        "/v1/runs/run%00x/logs".into(),
        "/v1/runs/run%00x/logs/stream".into(),
        "/v1/workflows/wf%00x".into(),
        "/v1/workflows/wf%00x/versions".into(),
        "/v1/templates/t%00x".into(),
        "/v1/schedules/s%00x".into(),
        "/v1/triggers/t%00x".into(),
        "/v1/runs?workflow_id=wf%00x".into(),
        "/v1/runs?context.k=v%00x".into(),
        "/v1/runs?context.k%00=v".into(),
        "/v1/runs?trigger=web%00hook".into(),
        "/v1/runs?status=RUN%00NING".into(),
        "/v1/runs/counts?workflow_id=wf%00x".into(),
        "/v1/workflows?name=w%00x".into(),
        "/v1/events?run_id=r%00x".into(),
        "/v1/events?workflow_id=w%00x".into(),
        "/v1/events?type=run.%00started".into(),
        format!("/v1/runs?workflow_id={wf}&after=run%00x"),
        "/v1/queues?name=q%00x".into(),
    ];
    for path in &gets {
        let response = app.get(path).await;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 400, "GET {path}: {body}");
    }
    let posts = [
        "/v1/runs/run%00x/cancel".to_owned(),
        "/v1/runs/run%00x/approve".into(),
        "/v1/runs/run%00x/retry".into(),
        "/v1/runs/run%00x/events/go".into(),
        format!("/v1/runs/{run}/events/g%00o"),
        "/v1/workflows/wf%00x/rollback".into(),
        "/v1/schedules/s%00x/pause".into(),
        "/v1/tasks/t%00x/heartbeat".into(),
        "/v1/tasks/t%00x/complete".into(),
        "/hooks/h%00x".into(),
    ];
    for path in &posts {
        let response = app.post(path, &json!({})).await;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 400, "POST {path}: {body}");
    }
    let deleted = app
        .client
        .delete(app.url("/v1/runs/run%00x"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 400);
    let filtered = app.get("/v1/runs?status=SUCCEEDED&context.k=v%00x").await;
    assert_eq!(
        filtered.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = filtered.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/context.k", "{problem}");
    // The store still answers.
    assert_eq!(app.run(&run).await["status"], "SUCCEEDED");
}
