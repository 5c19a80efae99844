//! Reading a run while it executes: the server answers from its own view of the run (no
//! store read), which must be, byte for byte, the stored run at the revision its `ETag`
//! names — never a step result the store has not committed, never older than a change
//! the server has answered for. `If-None-Match` answers `304` while nothing changed.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both::{Backend, both_stores, spawn_on};
use crate::helpers::{Target, TestApp, wait_until};

both_stores!(
    a_running_runs_view_is_the_stored_run_at_the_same_revision,
    a_cancel_is_seen_by_the_next_read_of_a_watched_run,
    reads_of_a_run_executing_here_do_not_reach_the_store,
    if_none_match_with_the_current_etag_answers_304,
);

/// One read: the status, the `ETag` and the body as sent.
async fn read(app: &TestApp, run: &str, fresh: bool) -> (u16, String, String) {
    let mut request = app.client.get(app.url(&format!("/v1/runs/{run}")));
    if fresh {
        request = request.header("Cache-Control", "no-cache");
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let tag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, tag, response.text().await.expect("body"))
}

fn revision(tag: &str) -> u64 {
    tag.trim_matches('"')
        .parse()
        .expect("an ETag is a revision")
}

async fn a_running_runs_view_is_the_stored_run_at_the_same_revision(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let downstream = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"z": 1, "a": [true, null, 1.5], "m": {"y": "é", "b": 2}}))
                .set_delay(Duration::from_millis(15)),
        )
        .mount(&downstream)
        .await;
    let slow = format!("{}/slow", downstream.uri());
    let items: Vec<u32> = (1..=12).collect();
    let workflow = app
        .create_workflow(&json!({"name": "views", "steps": [
            {"name": "first", "action": "transform", "input": {"value": {"k": [1, 2, 3], "s": "text"}}},
            {"name": "call", "action": "http", "input": {"method": "GET", "url": slow}},
            {"name": "each", "action": "http", "foreach": "{{ context.items }}", "concurrency": 3,
                "input": {"method": "GET", "url": slow}},
            {"name": "again", "action": "http", "input": {"method": "GET", "url": slow}},
            {"name": "last", "action": "transform", "input": {"value": "{{ steps.call.output.body.m.y }}"}}
        ]}))
        .await;
    let run = app
        .start_run(&workflow, json!({"who": "views", "items": items}))
        .await;
    let mut compared = 0;
    let mut last_rev = 0;
    loop {
        let (s1, t1, served) = read(&app, &run, false).await;
        let (s2, t2, stored) = read(&app, &run, true).await;
        assert_eq!((s1, s2), (200, 200));
        let (r1, r2) = (revision(&t1), revision(&t2));
        assert!(
            r1 >= last_rev,
            "a read went back from revision {last_rev} to {r1}"
        );
        last_rev = r1;
        let status: Value = serde_json::from_str(&served).expect("json");
        if r1 == r2 {
            assert_eq!(
                served, stored,
                "the view and the store differ at revision {r1}"
            );
            if status["status"] == "RUNNING" {
                compared += 1;
            }
        }
        if matches!(
            status["status"].as_str(),
            Some("SUCCEEDED" | "FAILED" | "CANCELED")
        ) {
            assert_eq!(status["status"], "SUCCEEDED", "{status}");
            break;
        }
    }
    assert!(
        compared >= 3,
        "only {compared} reads of the running run met the store at the same revision"
    );
}

async fn a_cancel_is_seen_by_the_next_read_of_a_watched_run(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let target = Target::start().await;
    target.hold();
    let workflow = app
        .create_workflow(&json!({"name": "held", "steps": [
            {"name": "quick", "action": "transform", "input": {"value": 1}},
            {"name": "held", "action": "http", "input": {"method": "GET", "url": target.url("/held")}}
        ]}))
        .await;
    let run = app.start_run(&workflow, json!({})).await;
    target.wait_in_flight(1).await;
    // Read it until the view is the one served (the held step shown running).
    wait_until("the held step to be read as running", || async {
        let (_, _, body) = read(&app, &run, false).await;
        let run: Value = serde_json::from_str(&body).ok()?;
        (run["steps"][1]["status"] == "RUNNING").then_some(())
    })
    .await;
    let canceled = app
        .post(&format!("/v1/runs/{run}/cancel"), &json!({}))
        .await;
    assert_eq!(canceled.status(), 200);
    let (status, _, body) = read(&app, &run, false).await;
    assert_eq!(status, 200);
    let seen: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(seen["status"], "CANCELED", "{seen}");
    target.release();
}

/// How many times the server has read a run from its store.
async fn store_reads(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let line = "orchestrator_store_operation_duration_seconds_count{operation=\"get_run\"}";
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn reads_of_a_run_executing_here_do_not_reach_the_store(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let target = Target::start().await;
    target.hold();
    let workflow = app
        .create_workflow(&json!({"name": "held", "steps": [
            {"name": "held", "action": "http", "input": {"method": "GET", "url": target.url("/held")}}
        ]}))
        .await;
    let run = app.start_run(&workflow, json!({})).await;
    target.wait_in_flight(1).await;
    let before = store_reads(&app).await;
    let (_, first, _) = read(&app, &run, false).await;
    for _ in 0..50 {
        let (status, tag, body) = read(&app, &run, false).await;
        assert_eq!((status, &tag), (200, &first));
        assert!(body.contains("\"RUNNING\""));
    }
    assert_eq!(
        store_reads(&app).await,
        before,
        "51 reads of a running run, the first answered by its task"
    );
    let (_, tag, _) = read(&app, &run, true).await;
    assert_eq!(tag, first);
    assert_eq!(
        store_reads(&app).await,
        before + 1,
        "no-cache reads the store"
    );
    target.release();
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
}

async fn if_none_match_with_the_current_etag_answers_304(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let workflow = app
        .create_workflow(&json!({"name": "one", "steps": [
            {"name": "only", "action": "transform", "input": {"value": 1}}
        ]}))
        .await;
    let run = app.start_run(&workflow, json!({})).await;
    app.wait_until_finished(&run).await;
    let (_, tag, _) = read(&app, &run, false).await;
    for sent in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"0\", {tag}"),
        "*".into(),
    ] {
        let response = app
            .client
            .get(app.url(&format!("/v1/runs/{run}")))
            .header("If-None-Match", &sent)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 304, "If-None-Match: {sent}");
        assert_eq!(response.headers()["etag"].to_str().unwrap(), tag);
        assert!(response.text().await.unwrap().is_empty());
    }
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{run}")))
        .header("If-None-Match", "\"999999\"")
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
}
