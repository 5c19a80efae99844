//! Hostile templates: definitions written to stall the engine or exhaust its memory fail
//! their own step within its budgets, while other runs go on at their usual pace, cancel
//! answers at once, and SIGTERM stops the server in time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{PATIENCE, ServerProcess, TestApp, spawn_app, spawn_app_with};

const SPIN: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
const GROW_OUTPUT: &str = "{% for i in range(20) %}{{ 'x' * 100000000 }}{% endfor %}";
const GROW_MEMORY: &str = "{% set s = namespace(v='x') %}{% for i in range(40) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v | length }}";

fn transform(value: &str) -> Value {
    json!({"name": "hostile", "steps": [
        {"name": "t", "action": "transform", "timeout_ms": 1000, "input": {"value": value}}
    ]})
}

async fn error_of(app: &TestApp, definition: &Value) -> String {
    let wf = app.create_workflow(definition).await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    done["steps"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The resident memory of this process (the in-process server), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[tokio::test]
async fn a_spinning_template_fails_its_step_and_other_runs_keep_their_pace() {
    let app = spawn_app().await;
    let spin = app.create_workflow(&transform(SPIN)).await;
    let quick = app
        .create_workflow(&json!({"name": "quick", "steps": [
            {"name": "a", "action": "transform", "input": {"value": "{{ context.n }}"}}
        ]}))
        .await;
    let hostile: Vec<String> =
        futures::future::join_all((0..2).map(|_| app.start_run(&spin, json!({})))).await;
    // While both render, ordinary runs start and finish as usual.
    for n in 0..5 {
        let started = Instant::now();
        let run = app.start_run(&quick, json!({"n": n})).await;
        let done = app.wait_until_finished(&run).await;
        assert_eq!(done["status"], "SUCCEEDED", "{done}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "an ordinary run took {:?}",
            started.elapsed()
        );
    }
    for run in hostile {
        let done = app.wait_until_finished(&run).await;
        let error = done["steps"][0]["error"].as_str().unwrap();
        assert!(
            error.contains("limits.template_fuel") || error.contains("timed out after 1000 ms"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_template_that_grows_its_output_stops_at_the_size_budget() {
    let app = spawn_app().await;
    let before = rss();
    let error = error_of(&app, &transform(GROW_OUTPUT)).await;
    assert!(
        error.contains("limits.template_bytes") || error.contains("limits.template_fuel"),
        "{error}"
    );
    assert!(
        rss() < before + 200 * 1024 * 1024,
        "the server's memory grew from {before} to {}",
        rss()
    );
}

#[tokio::test]
async fn a_template_that_grows_memory_kills_only_its_sandbox() {
    let app = spawn_app_with(|c| {
        c.limits.template_memory_bytes = 128 * 1024 * 1024;
        c.limits.template_fuel = 1_000_000_000;
        c.limits.template_time = Duration::from_secs(60);
    })
    .await;
    let before = rss();
    let grow = json!({"name": "grow", "steps": [
        {"name": "t", "action": "transform", "input": {"value": GROW_MEMORY}}
    ]});
    let error = error_of(&app, &grow).await;
    assert!(error.contains("limits.template_memory_bytes"), "{error}");
    assert!(rss() < before + 100 * 1024 * 1024);
    // The sandbox is replaced: the next heavy template renders.
    let fine = json!({"name": "fine", "steps": [
        {"name": "t", "action": "transform", "input": {"value": "{% for i in range(3) %}{{ i }}{% endfor %}"}}
    ]});
    let wf = app.create_workflow(&fine).await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["steps"][0]["output"], json!("012"), "{done}");
}

#[tokio::test]
async fn a_render_is_bounded_by_its_time_budget_and_cancel_answers_at_once() {
    let app = spawn_app_with(|c| {
        c.limits.template_fuel = 1_000_000_000_000;
        c.limits.template_time = Duration::from_secs(30);
    })
    .await;
    let wf = app
        .create_workflow(&json!({"name": "slow", "steps": [
            {"name": "t", "action": "transform", "input": {"value": SPIN}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&run, "RUNNING").await;
    let asked = Instant::now();
    let canceled = app
        .post(&format!("/v1/runs/{run}/cancel"), &json!({}))
        .await;
    assert_eq!(canceled.status(), 200);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "CANCELED");

    // The step's timeout_ms holds while its input renders.
    let error = error_of(
        &app,
        &json!({"name": "slow2", "steps": [
            {"name": "t", "action": "transform", "timeout_ms": 500, "input": {"value": SPIN}}
        ]}),
    )
    .await;
    assert!(error.contains("timed out after 500 ms"), "{error}");
}

#[tokio::test]
async fn sigterm_stops_the_server_in_time_while_a_template_renders() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let text = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  workers: 2\n  shutdown_grace: 2s\n\
         database:\n  path: {}\n\
         limits:\n  template_fuel: 1000000000000\n  template_time: 60s\n",
        dir.path().join("orchestrator.db").display()
    );
    std::fs::write(&config, text).unwrap();
    let mut server = ServerProcess::start(&config);
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/v1/workflows", server.address))
        .json(&transform(SPIN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run: Value = client
        .post(format!("{}/v1/runs", server.address))
        .json(&json!({"workflow_id": created["id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().expect("a run id").to_owned();
    // Wait until the step is rendering.
    crate::helpers::wait_until("the step to start", || async {
        let run: Value = client
            .get(format!("{}/v1/runs/{id}", server.address))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (run["steps"][0]["status"] == "RUNNING").then_some(())
    })
    .await;
    let asked = Instant::now();
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(2 + 5))
        .await
        .expect("the server exits within shutdown_grace + 5 s");
    assert!(status.success(), "{status:?}");
    assert!(asked.elapsed() < PATIENCE);
}
