//! `/v1/schedules`: real seconds-granularity schedules firing through the real server,
//! overlap policies, pause / resume / trigger, missed ticks after a stop, and bad input.
//! (Cron arithmetic and daylight saving are unit tests in `src/triggers/cron.rs`.)

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::both::{Backend, both_stores, spawn_on};
use orchestrator::config::RawConfig;

use crate::helpers::{TestApp, spawn_app_in, spawn_app_with, wait_until};

const QUICK: &str = r#"{"name": "tick", "steps": [
    {"name": "mark", "action": "transform", "input": {"set": {"marked": "{{ context.who }}"}}}]}"#;
const GATED: &str = r#"{"name": "gated", "steps": [
    {"name": "wait", "action": "transform", "requires_approval": true, "input": {"value": 1}}]}"#;

/// Creates a schedule; panics unless the answer is 201.
pub async fn create_schedule(app: &TestApp, body: Value) -> Value {
    let response = app.post("/v1/schedules", &body).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

/// Every run of a workflow (the first page is enough for these tests).
pub async fn runs_of(app: &TestApp, workflow: &str) -> Vec<Value> {
    let page: Value = app
        .get(&format!("/v1/runs?workflow_id={workflow}&limit=500"))
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

fn fire_time(run: &Value) -> DateTime<Utc> {
    run["trigger"]["fire_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn metric(app: &TestApp, line: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn a_seconds_schedule_fires_every_tick_once_and_pauses_and_resumes(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let wf = app
        .create_workflow(&serde_json::from_str(QUICK).unwrap())
        .await;
    let schedule = create_schedule(
        &app,
        json!({"id": "every-second", "workflow_id": wf, "cron": "* * * * * *",
               "timezone": "Europe/Berlin", "context": {"who": "cron"}, "overlap": "allow"}),
    )
    .await;
    assert_eq!(schedule["paused"], false);
    let next: DateTime<Utc> = schedule["next_fire_at"].as_str().unwrap().parse().unwrap();
    assert!(next > Utc::now() - chrono::Duration::seconds(1));
    let runs = wait_until("three scheduled runs to succeed", || async {
        let runs = runs_of(&app, &wf).await;
        let done = runs.iter().filter(|r| r["status"] == "SUCCEEDED").count();
        (done >= 3).then_some(runs)
    })
    .await;
    let mut times: Vec<DateTime<Utc>> = runs.iter().map(fire_time).collect();
    times.sort();
    let distinct: BTreeSet<_> = times.iter().collect();
    assert_eq!(distinct.len(), times.len(), "a tick fired twice: {times:?}");
    for run in &runs {
        assert_eq!(run["trigger"]["type"], "schedule");
        assert_eq!(run["trigger"]["id"], "every-second");
        assert_eq!(run["context"]["who"], "cron");
        assert_eq!(fire_time(run).timestamp_subsec_millis(), 0);
    }
    assert!(metric(&app, "orchestrator_schedule_fires_total{outcome=\"fired\"}").await >= 3);

    let paused: Value = app
        .post("/v1/schedules/every-second/pause", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paused["paused"], true);
    assert!(paused["next_fire_at"].is_null());
    let count = runs_of(&app, &wf).await.len();
    // Nothing is due while paused: two ticks' time passes without a run.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(runs_of(&app, &wf).await.len(), count);
    let resumed: Value = app
        .post("/v1/schedules/every-second/resume", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert!(resumed["next_fire_at"].is_string());
    wait_until("a run after resuming", || async {
        (runs_of(&app, &wf).await.len() > count).then_some(())
    })
    .await;
    let listed: Value = app.get("/v1/schedules").await.json().await.unwrap();
    assert_eq!(listed["items"][0]["id"], "every-second");
    assert!(listed["items"][0]["last_run_id"].is_string());
}

async fn trigger_starts_a_run_now_and_manual_runs_have_no_trigger(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let wf = app
        .create_workflow(&serde_json::from_str(QUICK).unwrap())
        .await;
    create_schedule(
        &app,
        json!({"id": "yearly", "workflow_id": wf, "cron": "@yearly", "paused": true,
               "context": {"who": "now"}}),
    )
    .await;
    let response = app.post("/v1/schedules/yearly/trigger", &json!({})).await;
    assert_eq!(response.status(), 200);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["trigger"]["type"], "schedule");
    assert_eq!(run["trigger"]["id"], "yearly");
    assert_eq!(run["context"]["who"], "now");
    let schedule: Value = app.get("/v1/schedules/yearly").await.json().await.unwrap();
    assert_eq!(schedule["last_run_id"], run["id"]);
    assert!(schedule["next_fire_at"].is_null(), "still paused");
    let manual = app.start_run(&wf, json!({"who": "me"})).await;
    let manual = app.run(&manual).await;
    assert!(manual.get("trigger").is_none(), "{manual}");
    let missing = app.post("/v1/schedules/nope/trigger", &json!({})).await;
    assert_eq!(missing.status(), 404);
}

async fn overlap_skip_waits_for_the_previous_run_and_cancel_previous_cancels_it(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let wf = app
        .create_workflow(&serde_json::from_str(GATED).unwrap())
        .await;
    create_schedule(
        &app,
        json!({"id": "skipper", "workflow_id": wf, "cron": "* * * * * *"}),
    )
    .await;
    let first = wait_until("the first run to park", || async {
        runs_of(&app, &wf)
            .await
            .into_iter()
            .find(|r| r["status"] == "WAITING_APPROVAL")
    })
    .await;
    wait_until("a skipped tick", || async {
        (metric(
            &app,
            "orchestrator_schedule_fires_total{outcome=\"skipped\"}",
        )
        .await
            >= 2)
            .then_some(())
    })
    .await;
    assert_eq!(
        runs_of(&app, &wf).await.len(),
        1,
        "skip started another run"
    );
    app.post("/v1/schedules/skipper/pause", &json!({})).await;
    let mut body: Value = app.get("/v1/schedules/skipper").await.json().await.unwrap();
    for key in [
        "next_fire_at",
        "last_fire_time",
        "last_run_id",
        "created_at",
        "updated_at",
        "created_by",
        "paused",
    ] {
        body.as_object_mut().unwrap().remove(key);
    }
    body["overlap"] = json!("cancel_previous");
    let replaced = app.put("/v1/schedules/skipper", &body).await;
    assert_eq!(replaced.status(), 200);
    let canceled = app
        .wait_for(
            first["id"].as_str().unwrap(),
            "the first run to be canceled",
            |r| r["status"] == "CANCELED",
        )
        .await;
    assert!(
        canceled["error"]
            .as_str()
            .unwrap()
            .contains("schedule skipper"),
        "{canceled}"
    );
    wait_until("a run of the next tick", || async {
        let runs = runs_of(&app, &wf).await;
        (runs.len() >= 2).then_some(())
    })
    .await;
}

async fn ticks_missed_while_the_server_was_down_fire_once_at_start(backend: Backend) {
    let dsn = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(crate::pg::fresh_database().await),
    };
    // The same store before and after the restart.
    let same_store = |raw: &mut RawConfig| {
        if let Some(dsn) = &dsn {
            raw.database.dsn = dsn.clone();
            raw.database.pool_size = 4;
        }
    };
    let app = spawn_app_with(same_store).await;
    let wf = app
        .create_workflow(&serde_json::from_str(QUICK).unwrap())
        .await;
    create_schedule(
        &app,
        json!({"id": "s", "workflow_id": wf, "cron": "* * * * * *", "overlap": "allow"}),
    )
    .await;
    wait_until("a first run", || async {
        (!runs_of(&app, &wf).await.is_empty()).then_some(())
    })
    .await;
    let dir = app.stop().await;
    let stopped = Utc::now();
    // Down for a few ticks.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarting = Utc::now();
    let app = spawn_app_in(dir, same_store).await;
    wait_until("a tick after the restart", || async {
        let runs = runs_of(&app, &wf).await;
        runs.iter().any(|r| fire_time(r) > restarting).then_some(())
    })
    .await;
    let mut after: Vec<DateTime<Utc>> = runs_of(&app, &wf)
        .await
        .iter()
        .map(fire_time)
        .filter(|t| *t > stopped)
        .collect();
    after.sort();
    // The first run after the stop is for the latest missed tick (due when the server
    // came back); the ticks before it, while nothing ran, never fire.
    assert!(
        after[0] >= restarting - chrono::Duration::seconds(1),
        "an older missed tick fired: stopped {stopped}, restarting {restarting}, {after:?}"
    );
    assert!(
        after
            .windows(2)
            .all(|w| w[1] - w[0] == chrono::Duration::seconds(1)),
        "{after:?}"
    );
    let missed = metric(
        &app,
        "orchestrator_schedule_fires_total{outcome=\"missed\"}",
    )
    .await;
    assert!(missed >= 2, "missed ticks counted: {missed}");
}

async fn bad_schedules_are_refused_with_the_pointer_and_ids_are_unique(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let wf = app
        .create_workflow(&serde_json::from_str(QUICK).unwrap())
        .await;
    for (body, pointer) in [
        (json!({"workflow_id": wf, "cron": "61 * * * *"}), "/cron"),
        (json!({"workflow_id": wf, "cron": "* * *"}), "/cron"),
        (json!({"workflow_id": wf, "cron": "0 0 31 2 *"}), "/cron"),
        (
            json!({"workflow_id": wf, "cron": "@hourly", "timezone": "Mars/Base"}),
            "/timezone",
        ),
        (
            json!({"workflow_id": "wf_missing", "cron": "@hourly"}),
            "/workflow_id",
        ),
        (json!({"cron": "@hourly"}), "/workflow_id"),
        (
            json!({"workflow_id": wf, "cron": "@hourly", "overlap": "queue"}),
            "/overlap",
        ),
        (
            json!({"workflow_id": wf, "cron": "@hourly", "id": "a b"}),
            "/id",
        ),
        (
            json!({"workflow_id": wf, "cron": "@hourly", "context": []}),
            "/context",
        ),
        (
            json!({"workflow_id": wf, "cron": "@hourly", "every": "day"}),
            "/every",
        ),
    ] {
        let response = app.post("/v1/schedules", &body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        let pointers: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert!(pointers.contains(&pointer), "{body}: {problem}");
    }
    let body = json!({"id": "once", "workflow_id": wf, "cron": "@daily"});
    let created = create_schedule(&app, body.clone()).await;
    assert_eq!(created["timezone"], "UTC");
    assert_eq!(created["overlap"], "skip");
    assert_eq!(app.post("/v1/schedules", &body).await.status(), 409);
    let generated = create_schedule(&app, json!({"workflow_id": wf, "cron": "@daily"})).await;
    assert!(generated["id"].as_str().unwrap().starts_with("sch_"));
    let deleted = app
        .client
        .delete(app.url("/v1/schedules/once"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get("/v1/schedules/once").await.status(), 404);
    let missing = app.put("/v1/schedules/once", &body).await;
    assert_eq!(missing.status(), 404);
}

both_stores!(
    a_seconds_schedule_fires_every_tick_once_and_pauses_and_resumes,
    trigger_starts_a_run_now_and_manual_runs_have_no_trigger,
    overlap_skip_waits_for_the_previous_run_and_cancel_previous_cancels_it,
    ticks_missed_while_the_server_was_down_fire_once_at_start,
    bad_schedules_are_refused_with_the_pointer_and_ids_are_unique,
);
