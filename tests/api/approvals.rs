//! Approvals: parking, approve/reject, exactly-once decisions, input schemas, timeouts.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn gated(app: &TestApp, approval: Value) -> (String, String) {
    let wf = app
        .create_workflow(&json!({"name": "gated", "steps": [
            {"name": "prepare", "action": "transform", "input": {"set": {"prepared": true}}},
            {"name": "ship", "action": "transform", "approval": approval, "input": {"set": {"shipped": "{{ context.note | default('none') }}"}}},
            {"name": "after", "action": "transform", "input": {"value": 1}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    (wf, run)
}

#[tokio::test]
async fn approve_resumes_a_parked_run_and_records_the_decision() {
    let app = spawn_app().await;
    let (_, run) = gated(&app, json!({})).await;
    let parked = app.run(&run).await;
    assert_eq!(parked["steps"][1]["status"], "WAITING_APPROVAL");
    crate::helpers::wait_until("the parked run's task to end", || async {
        (app.engine.active_runs() == 0).then_some(())
    })
    .await;
    assert_eq!(parked["current_step"], 1);
    let response = app
        .post(
            &format!("/v1/runs/{run}/approve"),
            &json!({"comment": "lgtm", "input": {"note": "careful"}}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(
        done["context"]["shipped"], "careful",
        "approval input merged into the context"
    );
    let approvals = done["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0]["step"], "ship");
    assert_eq!(approvals[0]["decision"], "approved");
    assert_eq!(approvals[0]["by"], "anonymous");
    assert_eq!(approvals[0]["comment"], "lgtm");
    assert!(approvals[0]["at"].is_string());
    let again = app
        .post(&format!("/v1/runs/{run}/approve"), &json!({}))
        .await;
    assert_eq!(again.status(), 409);
}

#[tokio::test]
async fn reject_ends_the_run_failed() {
    let app = spawn_app().await;
    let (_, run) = gated(&app, json!({})).await;
    let response = app
        .post(
            &format!("/v1/runs/{run}/reject"),
            &json!({"comment": "not today"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let done = app.run(&run).await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(done["steps"][1]["status"], "FAILED");
    assert_eq!(done["steps"][2]["status"], "SKIPPED");
    assert!(done["error"].as_str().unwrap().contains("not today"));
    assert_eq!(done["approvals"][0]["decision"], "rejected");
    assert_eq!(
        app.post(&format!("/v1/runs/{run}/reject"), &json!({}))
            .await
            .status(),
        409
    );
}

#[tokio::test]
async fn a_decision_is_taken_exactly_once_by_concurrent_approvers() {
    let app = spawn_app().await;
    let (_, run) = gated(&app, json!({})).await;
    let calls = (0..10).map(|i| {
        let request = app
            .client
            .post(app.url(&format!(
                "/v1/runs/{run}/{}",
                if i % 2 == 0 { "approve" } else { "reject" }
            )))
            .json(&json!({"comment": format!("decider {i}")}));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(calls).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["approvals"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn approval_input_is_checked_against_the_schema_and_the_run_keeps_waiting() {
    let app = spawn_app().await;
    let schema = json!({"type": "object", "properties": {"note": {"type": "string"}}, "additionalProperties": false});
    let (_, run) = gated(&app, json!({"input_schema": schema})).await;
    let response = app
        .post(
            &format!("/v1/runs/{run}/approve"),
            &json!({"input": {"note": 5, "extra": true}}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/input/note") && pointers.contains(&"/input"),
        "{problem}"
    );
    assert_eq!(app.run(&run).await["status"], "WAITING_APPROVAL");
    assert_eq!(
        app.post(
            &format!("/v1/runs/{run}/approve"),
            &json!({"input": {"note": "ok"}})
        )
        .await
        .status(),
        200
    );
}

#[tokio::test]
async fn deciding_about_an_unknown_step_or_run_is_refused() {
    let app = spawn_app().await;
    let (_, run) = gated(&app, json!({})).await;
    assert_eq!(
        app.post(&format!("/v1/runs/{run}/approve"), &json!({"step": "nope"}))
            .await
            .status(),
        400
    );
    assert_eq!(
        app.post(
            &format!("/v1/runs/{run}/approve"),
            &json!({"step": "prepare"})
        )
        .await
        .status(),
        409
    );
    assert_eq!(
        app.post(&format!("/v1/runs/{run}/approve"), &json!({"bogus": 1}))
            .await
            .status(),
        400
    );
    assert_eq!(
        app.post("/v1/runs/run_nope/approve", &json!({}))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.post(&format!("/v1/runs/{run}/approve"), &json!({"step": "ship"}))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn an_approval_nobody_decides_times_out_by_its_policy() {
    let app = spawn_app().await;
    let (_, approved) = gated(&app, json!({"timeout_ms": 100, "on_timeout": "approve"})).await;
    let (_, rejected) = gated(&app, json!({"timeout_ms": 100})).await;
    let done = app.wait_until_finished(&approved).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["approvals"][0]["by"], "system");
    assert!(
        done["approvals"][0]["comment"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
    let done = app.wait_until_finished(&rejected).await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(done["approvals"][0]["decision"], "rejected");
}

#[tokio::test]
async fn a_parked_branch_waits_while_other_branches_run() {
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&json!({"name": "branches", "steps": [
            {"name": "root", "action": "transform", "input": {"value": 0}},
            {"name": "gate", "action": "transform", "depends_on": ["root"], "requires_approval": true, "input": {"value": 1}},
            {"name": "free", "action": "transform", "depends_on": ["root"], "input": {"value": 2}},
            {"name": "join", "action": "transform", "depends_on": ["gate", "free"], "input": {"value": 3}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let parked = app.wait_for_status(&run, "WAITING_APPROVAL").await;
    assert_eq!(
        parked["steps"][2]["status"], "SUCCEEDED",
        "the free branch ran"
    );
    assert_eq!(parked["steps"][3]["status"], "PENDING");
    app.post(&format!("/v1/runs/{run}/approve"), &json!({"step": "gate"}))
        .await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
}
