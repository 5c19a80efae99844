//! Retention, on both stores: finished runs past `retention.runs` are deleted with their
//! steps, logs and events, runs still going are kept, and hook events every target has
//! acknowledged are pruned after `retention.hook_events`.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{spawn_app_with, wait_until};

async fn finished_runs_and_delivered_events_are_deleted_after_their_retention(dsn: Option<String>) {
    let target = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&target)
        .await;
    let url = target.uri();
    let app = spawn_app_with(move |raw| {
        if let Some(dsn) = dsn {
            raw.database.dsn = dsn;
        }
        raw.retention.runs = Duration::from_secs(1);
        raw.retention.hook_events = Duration::from_secs(1);
        raw.retention.interval = Duration::from_millis(200);
        raw.audit_log.base_url = url;
        raw.hooks.poll_interval = Duration::from_millis(50);
    })
    .await;
    let done = app
        .create_workflow(&json!({"name": "quick", "steps": [
            {"name": "a", "action": "transform", "input": {"set": {"a": 1}}}
        ]}))
        .await;
    let gated = app
        .create_workflow(&json!({"name": "gated", "steps": [
            {"name": "g", "action": "transform", "requires_approval": true, "input": {"value": 1}}
        ]}))
        .await;
    let finished = app.start_run(&done, json!({})).await;
    app.wait_until_finished(&finished).await;
    let parked = app.start_run(&gated, json!({})).await;
    app.wait_for_status(&parked, "WAITING_APPROVAL").await;

    wait_until("the finished run to be deleted", || async {
        (app.get(&format!("/v1/runs/{finished}")).await.status() == 404).then_some(())
    })
    .await;
    let logs = app.get(&format!("/v1/runs/{finished}/logs")).await;
    assert_eq!(logs.status(), 404);
    assert_eq!(app.get(&format!("/v1/runs/{parked}")).await.status(), 200);
    // Every event was delivered and is older than a second by now: the outbox empties.
    wait_until("the delivered events to be pruned", || async {
        let left = app.store.read_events(0, 100).await.ok()?;
        left.is_empty().then_some(())
    })
    .await;
    // Pruned only once acknowledged: the target had them all (4 of one run, 2 of the other).
    assert!(target.received_requests().await.unwrap().len() >= 6);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("orchestrator_retention_deleted_total{kind=\"runs\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("orchestrator_retention_deleted_total{kind=\"hook_events\"}"));
    // The same, for people: GET /v1/server (the console and `orchestrator status`).
    let server: serde_json::Value = app.get("/v1/server").await.json().await.unwrap();
    let retention = &server["retention"];
    assert_eq!(retention["runs_ms"], 1000, "{server}");
    assert_eq!(retention["hook_events_ms"], 1000);
    assert_eq!(retention["interval_ms"], 200);
    assert_eq!(retention["deleted"]["runs"], 1);
    // The parked run's events go only by pruning (the finished run's may go with it).
    assert!(retention["deleted"]["hook_events"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn retention_deletes_old_runs_and_delivered_events_on_the_embedded_store() {
    finished_runs_and_delivered_events_are_deleted_after_their_retention(None).await;
}

#[tokio::test]
async fn retention_deletes_old_runs_and_delivered_events_on_postgresql() {
    let dsn = crate::pg::fresh_database().await;
    finished_runs_and_delivered_events_are_deleted_after_their_retention(Some(dsn)).await;
}
