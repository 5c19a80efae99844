//! Hook delivery across replicas: two servers on one PostgreSQL database deliver each
//! event to a target once (only the holder of the target's lease delivers), and when the
//! holder stops, the other takes the lease over and delivers what comes next, once.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{TestApp, spawn_app_with, wait_until};

/// The events `target` received, as `(run_id, seq)`, in arrival order.
async fn received(target: &MockServer) -> Vec<(String, u64)> {
    target
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let body: Value = r.body_json().unwrap();
            (
                body["run_id"].as_str().unwrap().to_owned(),
                body["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Replica `id` on `dsn`, delivering hooks to `target`'s audit log.
async fn replica(id: &str, dsn: &str, target: &MockServer) -> TestApp {
    let (id, dsn, url) = (id.to_owned(), dsn.to_owned(), target.uri());
    spawn_app_with(move |raw| {
        raw.server.id = id;
        raw.database.dsn = dsn;
        raw.database.pool_size = 6;
        raw.engine.lease_ttl = Duration::from_secs(2);
        raw.audit_log.base_url = url;
        raw.hooks.poll_interval = Duration::from_millis(50);
    })
    .await
}

/// Starts `n` runs of `workflow`, alternating between `apps`, and waits for their end.
async fn run_many(apps: &[&TestApp], workflow: &str, n: usize) -> Vec<String> {
    let mut runs = Vec::new();
    for i in 0..n {
        runs.push(apps[i % apps.len()].start_run(workflow, json!({})).await);
    }
    for run in &runs {
        apps[0].wait_until_finished(run).await;
    }
    runs
}

/// Waits until every event in the outbox was delivered (the cursor reached its head),
/// then returns what the target received.
async fn all_delivered(app: &TestApp, target: &MockServer) -> Vec<(String, u64)> {
    wait_until(
        "the audit log's cursor to reach the outbox head",
        || async {
            let head = app.store.outbox_head().await.ok()?;
            let cursor = app.store.event_cursor("audit_log").await.ok()?;
            (head > 0 && cursor == head).then_some(())
        },
    )
    .await;
    received(target).await
}

fn assert_once(events: &[(String, u64)], expected: usize) {
    let unique: BTreeSet<&(String, u64)> = events.iter().collect();
    assert_eq!(unique.len(), expected, "every event arrived");
    assert_eq!(events.len(), expected, "no event arrived twice");
}

#[tokio::test]
async fn two_replicas_deliver_each_event_to_a_target_once() {
    let target = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/events"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&target)
        .await;
    let dsn = crate::pg::fresh_database().await;
    let a = replica("a", &dsn, &target).await;
    let b = replica("b", &dsn, &target).await;
    let workflow = a
        .create_workflow(&json!({"name": "two", "steps": [
            {"name": "x", "action": "transform", "input": {"set": {"x": 1}}},
            {"name": "y", "action": "transform", "input": {"set": {"y": 2}}}
        ]}))
        .await;
    // run.started, step.started and step.succeeded of each step, run.succeeded.
    let per_run = 6;
    let runs = run_many(&[&a, &b], &workflow, 10).await;
    assert_once(&all_delivered(&a, &target).await, runs.len() * per_run);

    // GET /v1/server names the replica delivering: exactly one of the two.
    let delivering = |server: serde_json::Value| server["hooks"][0]["delivering"] == true;
    let a_says = delivering(a.get("/v1/server").await.json().await.unwrap());
    let b_says = delivering(b.get("/v1/server").await.json().await.unwrap());
    assert!(
        a_says != b_says,
        "one replica delivers: a {a_says}, b {b_says}"
    );

    // The holder stops (releasing its lease); the other delivers what comes next.
    let holder_was_a = a.hooks.counts()[0].delivered > 0;
    assert_eq!(holder_was_a, a_says);
    let (stopping, staying) = if holder_was_a { (a, b) } else { (b, a) };
    stopping.stop().await;
    let more = run_many(&[&staying], &workflow, 4).await;
    let events = all_delivered(&staying, &target).await;
    assert_once(&events, (runs.len() + more.len()) * per_run);
    assert!(
        staying.hooks.counts()[0].delivered > 0,
        "the other replica took over"
    );
}
