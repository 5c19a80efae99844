//! The client's decisions on runs: approve (resuming a gated run that `run --wait` waits
//! for), reject, cancel, retry, and events.

use std::process::Stdio;

use serde_json::{Value, json};

use crate::client::{cli, gated, greet, json_out, orchestrator, stderr, stdout};
use crate::helpers::{PATIENCE, spawn_app};

#[tokio::test]
async fn approval_from_the_cli_resumes_a_gated_run_that_run_wait_waits_for() {
    let app = spawn_app().await;
    app.create_workflow(&gated()).await;
    let waiter = orchestrator(&app.address)
        .args(["run", "gated", "--wait", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = crate::helpers::wait_until("the run to wait for approval", || async {
        let runs: Value = app
            .get("/v1/runs?status=WAITING_APPROVAL")
            .await
            .json()
            .await
            .unwrap();
        runs["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let out = cli(
        &app.address,
        &[
            "approve",
            &run,
            "--comment",
            "ship it",
            "--input",
            r#"{"ticket": "OPS-1"}"#,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("{run} approved; the run is ")),
        "{}",
        stdout(&out)
    );
    let waited = tokio::time::timeout(PATIENCE, waiter.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let done = json_out(&waited);
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["approvals"][0]["comment"], "ship it");
    assert_eq!(done["context"]["ticket"], "OPS-1");

    let out = cli(&app.address, &["approve", &run]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("409 Conflict"), "{}", stderr(&out));

    let second = app.start_run("gated", json!({})).await;
    app.wait_for_status(&second, "WAITING_APPROVAL").await;
    let out = cli(
        &app.address,
        &["reject", &second, "--step", "ship", "--comment", "no"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(app.run(&second).await["status"], "FAILED");
}

#[tokio::test]
async fn cancel_and_retry_act_on_runs_and_refusals_exit_1() {
    let app = spawn_app().await;
    app.create_workflow(&greet()).await;
    app.create_workflow(&gated()).await;
    let waiter = orchestrator(&app.address)
        .args(["run", "gated", "--wait"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = crate::helpers::wait_until("the run to wait for approval", || async {
        let runs: Value = app
            .get("/v1/runs?status=WAITING_APPROVAL")
            .await
            .json()
            .await
            .unwrap();
        runs["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let out = cli(&app.address, &["cancel", &waiting, "-o", "json"]).await;
    assert_eq!(json_out(&out)["status"], "CANCELED");
    let waited = tokio::time::timeout(PATIENCE, waiter.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        waited.status.code(),
        Some(1),
        "run --wait exits 1 on CANCELED"
    );
    assert!(
        stdout(&waited).contains(&format!("{waiting} CANCELED")),
        "{}",
        stdout(&waited)
    );
    let out = cli(&app.address, &["cancel", &waiting]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("409 Conflict"), "{}", stderr(&out));

    let failed = app.start_run("greet", json!({"who": "bob"})).await;
    app.wait_for_status(&failed, "FAILED").await;
    let out = cli(&app.address, &["retry", &failed]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("{failed} retried; the run is ")),
        "{}",
        stdout(&out)
    );
    assert_eq!(app.wait_until_finished(&failed).await["status"], "FAILED");
    let log = app.logs(&failed).await;
    assert!(
        log.iter()
            .any(|e| e["message"] == "retry requested by anonymous"),
        "{log:?}"
    );
}

#[tokio::test]
async fn event_delivers_named_data_to_a_waiting_run() {
    let app = spawn_app().await;
    app.create_workflow(&json!({"id": "ci", "name": "ci", "steps": [
        {"name": "wait", "action": "event", "input": {"name": "ci-done"}}
    ]}))
    .await;
    let run = app.start_run("ci", json!({})).await;
    let out = cli(
        &app.address,
        &["event", &run, "ci-done", "--data", r#"{"build": "ok"}"#],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("Sent event ci-done to {run}\n"));
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["steps"][0]["output"], json!({"build": "ok"}));
}
