//! The edges of the worker API: hostile or malformed polls and ends (`400` with a pointer,
//! never a 500), workflows that misuse `task`, the queue and worker listings (API and
//! CLI), metrics, and parked polls on shutdown.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{cli, json_out, stdout};
use crate::helpers::{spawn_app, spawn_app_with, wait_until};
use crate::tasks::{claim_one, end, poll, task_workflow};

#[tokio::test]
async fn bad_polls_are_400_with_the_pointer_of_what_is_wrong() {
    let app = spawn_app().await;
    let long = "q".repeat(129);
    let many: Vec<String> = (0..33).map(|i| format!("q{i}")).collect();
    let cases = [
        (json!({"worker": "w"}), "/queues"),
        (json!({"queues": [], "worker": "w"}), "/queues"),
        (json!({"queues": "build", "worker": "w"}), "/queues"),
        (json!({"queues": many, "worker": "w"}), "/queues"),
        (
            json!({"queues": ["ok", "bad name"], "worker": "w"}),
            "/queues/1",
        ),
        (json!({"queues": [long], "worker": "w"}), "/queues/0"),
        (json!({"queues": [7], "worker": "w"}), "/queues/0"),
        (json!({"queues": ["q"]}), "/worker"),
        (json!({"queues": ["q"], "worker": ""}), "/worker"),
        (json!({"queues": ["q"], "worker": "w", "max": 0}), "/max"),
        (json!({"queues": ["q"], "worker": "w", "max": 101}), "/max"),
        (json!({"queues": ["q"], "worker": "w", "max": 1e9}), "/max"),
        (json!({"queues": ["q"], "worker": "w", "max": -1}), "/max"),
        (json!({"queues": ["q"], "worker": "w", "max": "10"}), "/max"),
        (
            json!({"queues": ["q"], "worker": "w", "wait_ms": 30001}),
            "/wait_ms",
        ),
        (
            json!({"queues": ["q"], "worker": "w", "wait_ms": 1e12}),
            "/wait_ms",
        ),
        (
            json!({"queues": ["q"], "worker": "w", "wait_ms": 1.5}),
            "/wait_ms",
        ),
        (
            json!({"queues": ["q"], "worker": "w", "lease": 1}),
            "/lease",
        ),
    ];
    for (body, pointer) in cases {
        let response = app.post("/v1/tasks/poll", &body).await;
        let status = response.status();
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
    }
    let not_json = app
        .client
        .post(app.url("/v1/tasks/poll"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    // Unknown queues are fine: a queue exists once used.
    assert!(
        poll(&app, &["never-used", "a:b/c.d_e-f"], 100, 0)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn oversized_outputs_and_progress_are_400_and_the_claim_stays_live() {
    let app = spawn_app_with(|raw| raw.limits.max_output_bytes = 1024).await;
    let wf = app.create_workflow(&task_workflow("big", json!({}))).await;
    let run = app.start_run(&wf, json!({"who": "x"})).await;
    let task = claim_one(&app, "big").await;
    let huge = json!({"output": {"blob": "x".repeat(2000)}});
    let (status, problem) = end(&app, &task, "complete", huge).await;
    assert_eq!(
        (status, problem["errors"][0]["pointer"].as_str()),
        (400, Some("/output")),
        "{problem}"
    );
    let progress = json!({"progress": "p".repeat(17 * 1024)});
    let (status, problem) = end(&app, &task, "heartbeat", progress).await;
    assert_eq!(
        (status, problem["errors"][0]["pointer"].as_str()),
        (400, Some("/progress")),
        "{problem}"
    );
    let error = json!({"error": "e".repeat(17 * 1024)});
    let (status, problem) = end(&app, &task, "fail", error).await;
    assert_eq!(
        (status, problem["errors"][0]["pointer"].as_str()),
        (400, Some("/error")),
        "{problem}"
    );
    // A body over limits.body_bytes is refused before it is read.
    let (status, _) = end(
        &app,
        &task,
        "complete",
        json!({"output": "y".repeat(2 * 1024 * 1024)}),
    )
    .await;
    assert_eq!(status, 413);
    let (status, _) = end(
        &app,
        &task,
        "complete",
        json!({"output": {"greeting": "small"}}),
    )
    .await;
    assert_eq!(status, 200);
    let done = app.wait_for_status(&run, "SUCCEEDED").await;
    assert_eq!(done["steps"][0]["output"]["greeting"], "small");
}

#[tokio::test]
async fn task_steps_are_checked_at_submission() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"name": "w", "action": "task", "input": {}}),
            "/steps/0/input",
        ),
        (
            json!({"name": "w", "action": "task", "input": {"queue": "bad name"}}),
            "/steps/0/input/queue",
        ),
        (
            json!({"name": "w", "action": "task", "input": {"queue": "q", "extra": 1}}),
            "/steps/0/input",
        ),
        (
            json!({"name": "w", "action": "task", "input": {"queue": "q"}, "heartbeat_ms": 5}),
            "/steps/0/heartbeat_ms",
        ),
        (
            json!({"name": "w", "action": "transform", "input": {"value": 1}, "heartbeat_ms": 1000}),
            "/steps/0/heartbeat_ms",
        ),
        (
            json!({"name": "w", "action": "task", "input": {"queue": "q", "payload": "{{ secrets.TOKEN }}"}}),
            "/steps/0/input/payload",
        ),
    ];
    for (step, pointer) in cases {
        let response = app
            .post("/v1/workflows", &json!({"name": "bad", "steps": [step]}))
            .await;
        let status = response.status();
        let problem: Value = response.json().await.unwrap();
        assert_eq!(status, 400, "{step}: {problem}");
        let pointers: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["pointer"].as_str())
            .collect();
        assert!(
            pointers.iter().any(|p| p.starts_with(pointer)),
            "{step}: {problem}"
        );
    }
    // A templated queue name is rendered per run; one that renders to a bad name fails the step.
    let wf = app
        .create_workflow(&json!({"name": "templated", "steps": [
            {"name": "work", "action": "task", "input": {"queue": "{{ context.queue }}"}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({"queue": "not a queue"})).await;
    let failed = app.wait_for_status(&run, "FAILED").await;
    assert!(
        failed["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("queue"),
        "{failed}"
    );
    let run = app.start_run(&wf, json!({"queue": "per-run"})).await;
    app.wait_for_status(&run, "WAITING").await;
    assert_eq!(claim_one(&app, "per-run").await["run_id"], run.as_str());
}

#[tokio::test]
async fn queues_and_workers_are_listed_by_the_api_the_cli_and_metrics() {
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&task_workflow("listed", json!({})))
        .await;
    for i in 0..3 {
        let run = app.start_run(&wf, json!({"who": i})).await;
        app.wait_for_status(&run, "WAITING").await;
    }
    let task = claim_one(&app, "listed").await;
    let queues: Value = app.get("/v1/queues").await.json().await.unwrap();
    let q = queues["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "listed")
        .unwrap();
    assert_eq!(
        (q["waiting"].as_u64(), q["in_flight"].as_u64()),
        (Some(2), Some(1)),
        "{q}"
    );
    assert!(q["oldest_waiting_ms"].as_u64().is_some());
    assert_eq!(q["workers"], json!(["test-worker"]));
    let workers: Value = app.get("/v1/workers").await.json().await.unwrap();
    let w = &workers["items"][0];
    assert_eq!(
        (w["name"].as_str(), w["in_flight"].as_u64()),
        (Some("test-worker"), Some(1)),
        "{w}"
    );
    assert_eq!(w["queues"], json!(["listed"]));

    let table = cli(&app.address, &["queues"]).await;
    let text = stdout(&table);
    assert!(text.starts_with("QUEUE"), "{text}");
    let row = text.lines().find(|l| l.starts_with("listed")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cells[1], cells[2]), ("2", "1"), "{row}");
    assert!(row.ends_with("test-worker"), "{row}");
    let listed = json_out(&cli(&app.address, &["workers", "-o", "json"]).await);
    assert_eq!(listed["items"][0]["name"], "test-worker");

    end(&app, &task, "complete", json!({"output": {}})).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for line in [
        "orchestrator_tasks_total{outcome=\"completed\",queue=\"listed\"} 1",
        "orchestrator_queue_waiting{queue=\"listed\"} 2",
        "orchestrator_task_wait_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
}

#[tokio::test]
async fn parked_polls_end_at_once_when_the_server_stops() {
    let app = spawn_app().await;
    let polls: Vec<_> = (0..3)
        .map(|i| {
            let (client, url) = (app.client.clone(), app.url("/v1/tasks/poll"));
            tokio::spawn(async move {
                let body = json!({"queues": ["idle"], "worker": format!("w{i}"), "wait_ms": 30000});
                let started = Instant::now();
                let response = client.post(url).json(&body).send().await.unwrap();
                let status = response.status();
                let answer: Value = response.json().await.unwrap();
                (status, answer, started.elapsed())
            })
        })
        .collect();
    wait_until("three parked polls", || async {
        (app.engine.parked_polls() == 3).then_some(())
    })
    .await;
    let stopping = Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the stop waited for the polls"
    );
    for poll in polls {
        let (status, answer, took) = poll.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(answer["items"], json!([]));
        assert!(took < Duration::from_secs(25), "{took:?}");
    }
}
