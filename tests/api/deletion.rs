//! Archiving workflows (`DELETE /v1/workflows/{id}`) and deleting runs
//! (`DELETE /v1/runs/{id}`): what stays readable, what is refused, what is gone from the
//! store, and that the token's name is recorded. Both stores.

use orchestrator::config::RawToken;
use serde_json::{Value, json};

use crate::helpers::{Target, TestApp};
use crate::stores::{Store, on_both_stores, rows_of_run, spawn_on};

on_both_stores!(
    an_archived_workflow_leaves_lists_and_starts_no_runs_but_stays_readable,
    a_finished_run_is_deleted_with_everything_it_owns,
    an_active_run_cannot_be_deleted,
);

const ADMIN: &str = "deleting-admin-0123456789";
const READER: &str = "deleting-reader-0123456789";

/// A server with an admin token named `ops` and a reader token named `viewer`.
async fn secured(store: Store) -> TestApp {
    // A hook target that is down: run events stay in the outbox.
    let down = format!("http://127.0.0.1:{}", crate::helpers::unused_port());
    let mut app = spawn_on(store, |raw| {
        raw.audit_log.base_url = down;
        raw.auth.tokens = vec![
            RawToken {
                name: "ops".into(),
                token: ADMIN.into(),
                role: "admin".into(),
            },
            RawToken {
                name: "viewer".into(),
                token: READER.into(),
                role: "reader".into(),
            },
        ];
    })
    .await;
    app.client = TestApp::client_with_token(ADMIN);
    app
}

async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.client.delete(app.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn listed(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect()
}

async fn an_archived_workflow_leaves_lists_and_starts_no_runs_but_stays_readable(store: Store) {
    let app = secured(store).await;
    let step = |v: u32| json!([{"name": "a", "action": "transform", "input": {"value": v}}]);
    let kept = app
        .create_workflow(&json!({"name": "kept", "steps": step(1)}))
        .await;
    let old = app
        .create_workflow(&json!({"name": "old", "steps": step(1)}))
        .await;
    let put = app
        .put(
            &format!("/v1/workflows/{old}"),
            &json!({"name": "old", "steps": step(2)}),
        )
        .await;
    assert_eq!(put.status(), 200);
    let run = app.start_run(&old, json!({})).await;
    let finished = app.wait_until_finished(&run).await;

    let reader = TestApp::client_with_token(READER);
    let refused = reader
        .delete(app.url(&format!("/v1/workflows/{old}")))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "a reader cannot archive");

    let (status, body) = delete(&app, &format!("/v1/workflows/{old}")).await;
    assert_eq!(status, 204, "{body}");
    let (_, page) = get_json(&app, "/v1/workflows").await;
    assert_eq!(listed(&page), [kept.as_str()]);
    let (_, page) = get_json(&app, "/v1/workflows?archived=true").await;
    assert_eq!(listed(&page), [old.as_str(), kept.as_str()]);
    let archived = &page["items"][0];
    assert_eq!(archived["archived_by"], "ops");
    assert!(archived["archived_at"].is_string());
    assert!(page["items"][1].get("archived_at").is_none());
    let (_, page) = get_json(&app, "/v1/workflows?archived=true&name_prefix=ol").await;
    assert_eq!(listed(&page), [old.as_str()]);

    // Reads stay: the workflow, its versions, its runs.
    let (status, wf) = get_json(&app, &format!("/v1/workflows/{old}")).await;
    assert_eq!(status, 200);
    assert_eq!(wf["version"], 2);
    assert_eq!(wf["archived_by"], "ops");
    let (status, _) = get_json(&app, &format!("/v1/workflows/{old}?version=1")).await;
    assert_eq!(status, 200);
    let (_, versions) = get_json(&app, &format!("/v1/workflows/{old}/versions")).await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 2);
    assert_eq!(app.run(&run).await, finished);

    // New runs and versions are refused.
    let start = app
        .post("/v1/runs", &json!({"workflow_id": old, "context": {}}))
        .await;
    assert_eq!(start.status(), 409);
    let problem: Value = start.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("archived by ops")
    );
    let put = app
        .put(
            &format!("/v1/workflows/{old}"),
            &json!({"name": "old", "steps": step(3)}),
        )
        .await;
    assert_eq!(put.status(), 409);
    let rollback = app
        .post(
            &format!("/v1/workflows/{old}/rollback"),
            &json!({"version": 1}),
        )
        .await;
    assert_eq!(rollback.status(), 409);

    // Archiving again changes nothing; unknown workflows are 404.
    let (status, _) = delete(&app, &format!("/v1/workflows/{old}")).await;
    assert_eq!(status, 204);
    let (_, wf) = get_json(&app, &format!("/v1/workflows/{old}")).await;
    assert_eq!(wf["archived_at"], archived["archived_at"]);
    let (status, problem) = delete(&app, "/v1/workflows/wf_nope").await;
    assert_eq!(status, 404, "{problem}");
    let still = app.start_run(&kept, json!({})).await;
    assert_eq!(app.wait_until_finished(&still).await["status"], "SUCCEEDED");
}

async fn a_finished_run_is_deleted_with_everything_it_owns(store: Store) {
    let app = secured(store).await;
    let wf = app
        .create_workflow(&json!({"name": "gone", "steps": [
            {"name": "gate", "action": "transform", "requires_approval": true, "input": {"set": {"tag": "doomed"}}}
        ]}))
        .await;
    let other = app.start_run(&wf, json!({"tag": "doomed"})).await;
    app.wait_for_status(&other, "WAITING_APPROVAL").await;
    let run = app
        .post(
            "/v1/runs",
            &json!({"workflow_id": wf, "context": {"tag": "doomed"}}),
        )
        .await;
    let run = run.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    app.approve(&run).await;
    assert_eq!(app.wait_until_finished(&run).await["status"], "SUCCEEDED");
    let lines = app.post_log_lines(&run, "a client line\n").await;
    assert_eq!(lines.status(), 201);
    assert!(!app.store.read_logs(&run, 0, 10).await.unwrap().is_empty());
    let events_before = app.store.read_events(0, 1000).await.unwrap();
    assert!(events_before.iter().any(|e| e.run_id == run));
    for table in ["step_runs", "approvals", "run_logs", "events"] {
        assert!(rows_of_run(&app, table, &run).await > 0, "{table} before");
    }

    let (status, body) = delete(&app, &format!("/v1/runs/{run}")).await;
    assert_eq!(status, 204, "{body}");

    let (status, problem) = get_json(&app, &format!("/v1/runs/{run}")).await;
    assert_eq!(status, 404);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("deleted by ops"), "{detail}");
    assert!(detail.contains("SUCCEEDED"), "{detail}");
    for path in [
        format!("/v1/runs/{run}/logs"),
        format!("/v1/runs/{run}/logs/stream"),
    ] {
        assert_eq!(app.get(&path).await.status(), 404, "{path}");
    }
    let (status, _) = delete(&app, &format!("/v1/runs/{run}")).await;
    assert_eq!(status, 404, "deleting twice");
    let retry = app.post(&format!("/v1/runs/{run}/retry"), &json!({})).await;
    assert_eq!(retry.status(), 404);

    // Gone from the store: steps, approvals, logs, events, search.
    assert!(app.store.get_run(&run).await.is_err());
    let mut tables = vec![
        "step_runs",
        "approvals",
        "run_logs",
        "events",
        "idempotency_keys",
    ];
    if store == Store::Sqlite {
        tables.push("run_context_index");
    }
    for table in tables {
        assert_eq!(rows_of_run(&app, table, &run).await, 0, "{table}");
        if !["idempotency_keys", "approvals"].contains(&table) {
            assert!(
                rows_of_run(&app, table, &other).await > 0,
                "{table} of another run"
            );
        }
    }
    let events = app.store.read_events(0, 1000).await.unwrap();
    assert!(events.iter().all(|e| e.run_id != run));
    assert!(
        events.iter().any(|e| e.run_id == other),
        "other runs keep theirs"
    );
    let (_, page) = get_json(&app, "/v1/runs?context.tag=doomed").await;
    assert_eq!(listed(&page), [other.as_str()]);
    let (_, counts) = get_json(&app, &format!("/v1/runs/counts?workflow_id={wf}")).await;
    assert_eq!(counts["total"], 1);

    // Its idempotency key is free again.
    let keyed = |key: &str| {
        app.client
            .post(app.url("/v1/runs"))
            .header("Idempotency-Key", key)
            .json(&json!({"workflow_id": wf}))
            .send()
    };
    let first: Value = keyed("k-1").await.unwrap().json().await.unwrap();
    let first = first["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&first, "WAITING_APPROVAL").await;
    let canceled = app
        .post(&format!("/v1/runs/{first}/cancel"), &json!({}))
        .await;
    let status = canceled.status();
    assert_eq!(status, 200, "{}", canceled.text().await.unwrap());
    app.wait_until_finished(&first).await;
    let (status, _) = delete(&app, &format!("/v1/runs/{first}")).await;
    assert_eq!(status, 204);
    let again = keyed("k-1").await.unwrap();
    assert_eq!(again.status(), 201, "a new run, not the deleted one");
}

async fn an_active_run_cannot_be_deleted(store: Store) {
    let target = Target::start().await;
    target.hold();
    let app = secured(store).await;
    let wf = app
        .create_workflow(&json!({"name": "busy", "steps": [
            {"name": "call", "action": "http", "input": {"url": target.url("/slow")}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    target.wait_in_flight(1).await;
    let (status, problem) = delete(&app, &format!("/v1/runs/{run}")).await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("RUNNING"));
    assert_eq!(app.run(&run).await["status"], "RUNNING");

    let gated = app
        .create_workflow(&json!({"name": "gated", "steps": [
            {"name": "gate", "action": "transform", "requires_approval": true, "input": {"value": 1}}
        ]}))
        .await;
    let waiting = app.start_run(&gated, json!({})).await;
    app.wait_for_status(&waiting, "WAITING_APPROVAL").await;
    let (status, _) = delete(&app, &format!("/v1/runs/{waiting}")).await;
    assert_eq!(status, 409);

    target.release();
    assert_eq!(app.wait_until_finished(&run).await["status"], "SUCCEEDED");
    let (status, _) = delete(&app, &format!("/v1/runs/{run}")).await;
    assert_eq!(status, 204);
    let (status, _) = delete(&app, "/v1/runs/run_unknown").await;
    assert_eq!(status, 404);
}
