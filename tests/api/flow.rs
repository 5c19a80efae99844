//! Flow control (DESIGN §9) through the real server on both stores: `foreach` with its
//! concurrency measured at a real downstream, `always_run`, child runs, durable timers and
//! events sent to runs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Target, TestApp, spawn_app_in, spawn_app_with, wait_until};
use crate::pg;

/// Runs `$body(app)` once on the embedded store and once on PostgreSQL.
macro_rules! on_both_stores {
    ($($name:ident => $body:ident;)+) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                let app = crate::helpers::spawn_app_with(|c| c.limits.foreach_items = 50).await;
                super::$body(app).await;
            })+
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                let dsn = crate::pg::fresh_database().await;
                let app = crate::helpers::spawn_app_with(|c| {
                    c.database.dsn = dsn;
                    c.limits.foreach_items = 50;
                })
                .await;
                super::$body(app).await;
            })+
        }
    };
}

on_both_stores! {
    foreach_runs_every_item_in_order_never_above_its_concurrency => foreach_concurrency;
    a_failed_item_fails_the_step_and_cancels_the_items_in_flight => foreach_failure;
    items_are_retried_one_by_one_by_the_step_policy => foreach_retries;
    a_foreach_over_more_than_the_limit_fails_the_step => foreach_limit;
    always_run_steps_run_after_a_failure_and_a_stop_without_changing_the_outcome => always_run;
    a_child_run_is_awaited_and_its_failure_fails_the_step => child_runs;
    canceling_a_parent_cancels_its_child_within_a_second => cancel_child;
    workflows_calling_themselves_stop_at_the_depth_limit => cycle;
    a_timer_parks_the_run_without_a_task_and_fires_on_time => timer;
    events_are_taken_kept_checked_and_timed_out => events;
}

/// A URL nothing listens on: calls to it fail at once.
const DOWN: &str = "http://127.0.0.1:1/down";

async fn create(app: &TestApp, definition: Value) -> String {
    app.create_workflow(&definition).await
}

async fn foreach_concurrency(app: TestApp) {
    let target = Target::start().await;
    target.hold();
    let wf = create(
        &app,
        json!({"name": "fan", "steps": [
            {"name": "each", "action": "http", "foreach": "{{ context.ids }}", "concurrency": 3,
             "input": {"url": target.url("/item/{{ item }}")}},
            {"name": "doubled", "action": "transform", "foreach": "{{ context.ids }}",
             "input": {"value": "{{ item * 2 }}-{{ index }}"}}
        ]}),
    )
    .await;
    let ids: Vec<u32> = (0..12).collect();
    let run = app.start_run(&wf, json!({ "ids": ids })).await;
    target.wait_in_flight(3).await;
    let seen = app.run(&run).await;
    let items = seen["steps"][0]["items"].as_array().unwrap();
    assert_eq!(items.len(), 12);
    let running = items.iter().filter(|i| i["status"] == "RUNNING").count();
    assert!(running <= 3, "{running} items running at concurrency 3");
    target.release();
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done:#}");
    assert_eq!(
        target.max_in_flight(),
        3,
        "the downstream saw the concurrency"
    );
    let mut paths: Vec<String> = target.requests().into_iter().map(|r| r.path).collect();
    paths.sort();
    let mut expected: Vec<String> = ids.iter().map(|i| format!("/item/{i}")).collect();
    expected.sort();
    assert_eq!(paths, expected, "each item called once");
    let doubled: Vec<Value> = (0..12).map(|i| json!(format!("{}-{i}", i * 2))).collect();
    assert_eq!(done["steps"][1]["output"]["items"], json!(doubled));
    let step = &done["steps"][0];
    assert_eq!(step["output"]["items"].as_array().unwrap().len(), 12);
    assert!(
        step["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "SUCCEEDED" && i["attempts"] == 1)
    );
}

async fn foreach_failure(app: TestApp) {
    let downstream = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&downstream)
        .await;
    Mock::given(path("/bad"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"why": "no"})))
        .mount(&downstream)
        .await;
    let wf = create(
        &app,
        json!({"name": "fails", "steps": [
            {"name": "each", "action": "http", "foreach": "{{ context.paths }}", "concurrency": 4,
             "input": {"url": format!("{}/{{{{ item }}}}", downstream.uri())}},
            {"name": "after", "action": "transform", "input": {"value": 1}}
        ]}),
    )
    .await;
    let started = Instant::now();
    let run = app
        .start_run(
            &wf,
            json!({"paths": ["slow", "slow", "bad", "slow", "slow"]}),
        )
        .await;
    let done = app.wait_until_finished(&run).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "items in flight were not waited for"
    );
    assert_eq!(done["status"], "FAILED");
    let step = &done["steps"][0];
    assert_eq!(step["status"], "FAILED");
    assert!(
        step["error"].as_str().unwrap().starts_with("item 2 failed"),
        "{}",
        step["error"]
    );
    let statuses: Vec<&str> = step["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[2], "FAILED");
    assert_eq!(
        &statuses[..2],
        &["CANCELED", "CANCELED"],
        "in-flight items canceled"
    );
    assert_eq!(statuses[4], "SKIPPED", "never started: {statuses:?}");
    assert_eq!(done["steps"][1]["status"], "SKIPPED");
}

async fn foreach_retries(app: TestApp) {
    let downstream = MockServer::start().await;
    Mock::given(path("/flaky/1"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&downstream)
        .await;
    Mock::given(path_regex("^/flaky/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&downstream)
        .await;
    let wf = create(
        &app,
        json!({"name": "retries", "steps": [
            {"name": "each", "action": "http", "foreach": "{{ [0, 1, 2] }}",
             "retry": {"max": 3, "backoff_ms": 10},
             "input": {"url": format!("{}/flaky/{{{{ item }}}}", downstream.uri())}}
        ]}),
    )
    .await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done:#}");
    let attempts: Vec<u64> = done["steps"][0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 3, 1]);
    let logs = app.logs(&run).await;
    assert!(logs.iter().any(|l| {
        l["message"]
            .as_str()
            .unwrap()
            .contains("item 1: attempt 1 of 4 failed")
    }));
}

async fn foreach_limit(app: TestApp) {
    let wf = create(
        &app,
        json!({"name": "many", "steps": [
            {"name": "each", "action": "transform", "foreach": "{{ context.items }}",
             "input": {"value": "{{ item }}"}}
        ]}),
    )
    .await;
    let run = app
        .start_run(&wf, json!({"items": (0..51).collect::<Vec<u32>>()}))
        .await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "FAILED");
    assert!(
        done["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("51 items, over limits.foreach_items (50)")
    );
    let run = app.start_run(&wf, json!({"items": "not a list"})).await;
    let done = app.wait_until_finished(&run).await;
    assert!(
        done["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("must give an array; it gave a string")
    );
    let run = app.start_run(&wf, json!({"items": []})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["steps"][0]["output"], json!({"items": []}));
}

async fn always_run(app: TestApp) {
    let failing = create(
        &app,
        json!({"name": "cleanup", "steps": [
            {"name": "work", "action": "http", "retry": {"max": 0}, "input": {"url": DOWN}},
            {"name": "next", "action": "transform", "depends_on": ["work"], "input": {"value": 1}},
            {"name": "cleanup", "action": "transform", "depends_on": ["next"], "always_run": true,
             "input": {"set": {"cleaned": "{{ steps.work.status }}"}}}
        ]}),
    )
    .await;
    let run = app.start_run(&failing, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(
        done["status"], "FAILED",
        "the cleanup does not hide the failure"
    );
    assert_eq!(done["steps"][1]["status"], "SKIPPED");
    assert_eq!(done["steps"][2]["status"], "SUCCEEDED");
    assert_eq!(done["context"]["cleaned"], "FAILED");

    let stopped = create(
        &app,
        json!({"name": "stopped", "steps": [
            {"name": "gate", "action": "condition", "input": {"key": "go", "equals": true}},
            {"name": "work", "action": "transform", "depends_on": ["gate"], "input": {"value": 1}},
            {"name": "alert", "action": "transform", "depends_on": ["work"], "always_run": true,
             "input": {"value": "alerted"}}
        ]}),
    )
    .await;
    let run = app.start_run(&stopped, json!({"go": false})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["steps"][1]["status"], "SKIPPED");
    assert_eq!(done["steps"][2]["status"], "SUCCEEDED");

    let cleanup_fails = create(
        &app,
        json!({"name": "cleanup-fails", "steps": [
            {"name": "work", "action": "transform", "input": {"value": 1}},
            {"name": "cleanup", "action": "http", "depends_on": ["work"], "always_run": true,
             "retry": {"max": 0}, "input": {"url": DOWN}}
        ]}),
    )
    .await;
    let run = app.start_run(&cleanup_fails, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(
        done["status"], "FAILED",
        "a failing always_run step fails the run"
    );
}

async fn child_runs(app: TestApp) {
    let child = create(
        &app,
        json!({"name": "child", "steps": [
            {"name": "greet", "action": "transform",
             "input": {"set": {"greeting": "hello {{ context.who }}", "parent": "{{ run.parent_id }}"}}}
        ]}),
    )
    .await;
    let failing_child = create(
        &app,
        json!({"name": "failing-child", "steps": [
            {"name": "boom", "action": "http", "retry": {"max": 0}, "input": {"url": DOWN}}
        ]}),
    )
    .await;
    let parent = create(
        &app,
        json!({"name": "parent", "steps": [
            {"name": "call", "action": "workflow",
             "input": {"workflow_id": child, "context": {"who": "{{ context.name }}"}}},
            {"name": "use", "action": "transform",
             "input": {"value": "{{ steps.call.output.context.greeting }}"}}
        ]}),
    )
    .await;
    let run = app.start_run(&parent, json!({"name": "ada"})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done:#}");
    let output = &done["steps"][0]["output"];
    assert_eq!(output["status"], "SUCCEEDED");
    assert_eq!(output["context"]["greeting"], "hello ada");
    assert_eq!(output["context"]["parent"], run.as_str());
    assert_eq!(done["steps"][1]["output"], "hello ada");
    let child_run = app.run(output["run_id"].as_str().unwrap()).await;
    assert_eq!(child_run["parent_run_id"], run.as_str());

    let parent_of_failure = create(
        &app,
        json!({"name": "parent-of-failure", "steps": [
            {"name": "call", "action": "workflow", "input": {"workflow_id": failing_child}}
        ]}),
    )
    .await;
    let run = app.start_run(&parent_of_failure, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "FAILED");
    let error = done["steps"][0]["error"].as_str().unwrap();
    assert!(error.contains("ended FAILED"), "{error}");
    assert_eq!(done["steps"][0]["output"]["status"], "FAILED");

    let unknown = app
        .post(
            "/v1/workflows",
            &json!({"name": "dangling", "steps": [
                {"name": "call", "action": "workflow", "input": {"workflow_id": "wf_nope"}}
            ]}),
        )
        .await;
    assert_eq!(unknown.status(), 400);
    let problem: Value = unknown.json().await.unwrap();
    assert_eq!(
        problem["errors"][0]["pointer"], "/steps/0/input/workflow_id",
        "{problem:#}"
    );
}

async fn cancel_child(app: TestApp) {
    let child = create(
        &app,
        json!({"name": "sleeper", "steps": [
            {"name": "nap", "action": "wait", "input": {"duration_ms": 600000}}
        ]}),
    )
    .await;
    let parent = create(
        &app,
        json!({"name": "waits-on-sleeper", "steps": [
            {"name": "call", "action": "workflow", "input": {"workflow_id": child}}
        ]}),
    )
    .await;
    let run = app.start_run(&parent, json!({})).await;
    let parked = app.wait_for_status(&run, "WAITING").await;
    let child_id = parked["steps"][0]["waiting"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(&child_id, "WAITING").await;
    let canceled = app
        .post(&format!("/v1/runs/{run}/cancel"), &json!({}))
        .await;
    assert_eq!(canceled.status(), 200);
    let asked = Instant::now();
    let child_run = app.wait_until_finished(&child_id).await;
    assert_eq!(child_run["status"], "CANCELED");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(app.run(&run).await["status"], "CANCELED");
}

async fn cycle(app: TestApp) {
    let wf = create(
        &app,
        json!({"name": "ouroboros", "steps": [
            {"name": "noop", "action": "transform", "input": {"value": 1}}
        ]}),
    )
    .await;
    let again = app
        .put(
            &format!("/v1/workflows/{wf}"),
            &json!({"name": "ouroboros", "steps": [
                {"name": "call", "action": "workflow", "input": {"workflow_id": wf}}
            ]}),
        )
        .await;
    assert_eq!(
        again.status(),
        200,
        "a workflow may call itself (under a when)"
    );
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "FAILED");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("runs nest at most 10 deep"),
        "{}",
        done["error"]
    );
    let runs = app
        .get("/v1/runs?limit=50")
        .await
        .json::<Value>()
        .await
        .unwrap();
    let all = runs["items"].as_array().unwrap();
    assert_eq!(all.len(), 11, "the top run and ten nested children");
    assert!(all.iter().all(|r| r["status"] == "FAILED"));
}

async fn timer(app: TestApp) {
    let wf = create(
        &app,
        json!({"name": "nap", "steps": [
            {"name": "nap", "action": "wait", "input": {"duration_ms": 1500}},
            {"name": "after", "action": "transform", "input": {"value": "{{ steps.nap.status }}"}}
        ]}),
    )
    .await;
    let started = Instant::now();
    let run = app.start_run(&wf, json!({})).await;
    let parked = app.wait_for_status(&run, "WAITING").await;
    assert_eq!(parked["steps"][0]["status"], "WAITING");
    assert!(parked["steps"][0]["waiting"]["until"].is_string());
    wait_until("the waiting run to hold no task", || async {
        (app.engine.active_runs() == 0).then_some(())
    })
    .await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(done["steps"][1]["output"], "SUCCEEDED");
    let waiting = app.get("/v1/runs?status=WAITING").await;
    assert_eq!(waiting.status(), 200);
}

async fn events(app: TestApp) {
    let wf = create(
        &app,
        json!({"name": "callback", "steps": [
            {"name": "build", "action": "transform", "input": {"value": 1}},
            {"name": "ci", "action": "event", "depends_on": ["build"],
             "input": {"name": "ci.done", "schema": {"type": "object", "required": ["ok"]}}},
            {"name": "report", "action": "transform", "input": {"value": "{{ steps.ci.output.ok }}"}}
        ]}),
    )
    .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&run, "WAITING").await;
    let bad = app
        .post(
            &format!("/v1/runs/{run}/events/ci.done"),
            &json!({"data": {"nope": 1}}),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let problem: Value = bad.json().await.unwrap();
    assert!(
        problem["errors"][0]["pointer"]
            .as_str()
            .unwrap()
            .starts_with("/data")
    );
    assert_eq!(
        app.run(&run).await["status"],
        "WAITING",
        "a bad event changes nothing"
    );
    let unknown = app
        .post(
            &format!("/v1/runs/{run}/events/other"),
            &json!({"data": {}}),
        )
        .await;
    assert_eq!(unknown.status(), 409);
    let good = app
        .post(
            &format!("/v1/runs/{run}/events/ci.done"),
            &json!({"data": {"ok": true}}),
        )
        .await;
    assert_eq!(good.status(), 200);
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["steps"][1]["output"], json!({"ok": true}));
    assert_eq!(done["steps"][2]["output"], true);
    let late = app
        .post(
            &format!("/v1/runs/{run}/events/ci.done"),
            &json!({"data": {"ok": true}}),
        )
        .await;
    assert_eq!(late.status(), 409, "a finished run takes no event");

    // An event that arrives before its step waits is kept for it.
    let early = create(
        &app,
        json!({"name": "early", "steps": [
            {"name": "nap", "action": "wait", "input": {"duration_ms": 500}},
            {"name": "ci", "action": "event", "depends_on": ["nap"], "input": {"name": "done"}}
        ]}),
    )
    .await;
    let run = app.start_run(&early, json!({})).await;
    let kept = app
        .post(&format!("/v1/runs/{run}/events/done"), &json!({"data": 7}))
        .await;
    assert_eq!(kept.status(), 200);
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["steps"][1]["output"], 7);

    let timed = create(
        &app,
        json!({"name": "timed", "steps": [
            {"name": "ci", "action": "event", "input": {"name": "never", "timeout_ms": 300}}
        ]}),
    )
    .await;
    let run = app.start_run(&timed, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "FAILED");
    assert!(
        done["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("did not arrive")
    );
}

#[tokio::test]
async fn definitions_are_checked_at_their_pointers() {
    let app = spawn_app_with(|_| {}).await;
    for (step, pointer) in [
        (
            json!({"name": "s", "action": "transform", "foreach": "{{ [1", "input": {"value": 1}}),
            "/steps/0/foreach",
        ),
        (
            json!({"name": "s", "action": "transform", "foreach": "{{ [1] }}", "concurrency": 0, "input": {"value": 1}}),
            "/steps/0/concurrency",
        ),
        (
            json!({"name": "s", "action": "transform", "concurrency": 2, "input": {"value": 1}}),
            "/steps/0/concurrency",
        ),
        (
            json!({"name": "s", "action": "wait", "input": {"until": "tomorrow"}}),
            "/steps/0/input/until",
        ),
        (
            json!({"name": "s", "action": "wait", "input": {"duration_ms": 5, "sleep": 1}}),
            "/steps/0/input",
        ),
        (
            json!({"name": "s", "action": "event", "foreach": "{{ [1] }}", "input": {"name": "x"}}),
            "/steps/0/foreach",
        ),
        (
            json!({"name": "s", "action": "transform", "input": {"value": "{{ item }}"}}),
            "/steps/0/input/value",
        ),
    ] {
        let response = app
            .post("/v1/workflows", &json!({"name": "bad", "steps": [step]}))
            .await;
        assert_eq!(response.status(), 400, "{step}");
        let problem: Value = response.json().await.unwrap();
        let pointers: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert!(pointers.contains(&pointer), "{step}: {problem:#}");
    }
}

#[tokio::test]
async fn a_timer_that_came_due_while_the_server_was_down_fires_at_start() {
    let app = spawn_app_with(|_| {}).await;
    let wf = create(
        &app,
        json!({"name": "nap", "steps": [
            {"name": "nap", "action": "wait", "input": {"duration_ms": 1000}}
        ]}),
    )
    .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&run, "WAITING").await;
    let dir = app.stop().await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // the timer must pass while down
    let app = spawn_app_in(dir, |_| {}).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
}

#[tokio::test]
async fn a_foreach_step_is_not_repeated_for_items_committed_before_a_kill() {
    use crate::helpers::{ServerProcess, write_config};
    let downstream = MockServer::start().await;
    Mock::given(path_regex("^/item/"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(20)))
        .mount(&downstream)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let server = ServerProcess::start(&config);
    let client = reqwest::Client::new();
    let wf: Value = client
        .post(format!("{}/v1/workflows", server.address))
        .json(&json!({"name": "big", "steps": [
            {"name": "each", "action": "http", "foreach": "{{ context.items }}", "concurrency": 10,
             "input": {"url": format!("{}/item/{{{{ item }}}}", downstream.uri())}}
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items: Vec<u32> = (0..500).collect();
    let run: Value = client
        .post(format!("{}/v1/runs", server.address))
        .json(&json!({"workflow_id": wf["id"], "context": {"items": items}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/runs/{run_id}", server.address);
    let committed: Vec<usize> = wait_until("a third of the items committed", || async {
        let run: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
        let done: Vec<usize> = run["steps"][0]["items"]
            .as_array()?
            .iter()
            .filter(|i| i["status"] == "SUCCEEDED")
            .map(|i| i["index"].as_u64().unwrap() as usize)
            .collect();
        (done.len() >= 150).then_some(done)
    })
    .await;
    server.kill();
    let server = ServerProcess::start(&config);
    let url = format!("{}/v1/runs/{run_id}", server.address);
    let done: Value = wait_until("the run to finish after the restart", || async {
        let run: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
        (run["status"] == "SUCCEEDED").then_some(run)
    })
    .await;
    assert_eq!(
        done["steps"][0]["output"]["items"]
            .as_array()
            .unwrap()
            .len(),
        500
    );
    let requests = downstream.received_requests().await.unwrap();
    let mut calls = vec![0; 500];
    for request in &requests {
        let n: usize = request
            .url
            .path()
            .trim_start_matches("/item/")
            .parse()
            .unwrap();
        calls[n] += 1;
    }
    assert!(calls.iter().all(|&c| c >= 1), "every item ran");
    for i in committed {
        assert_eq!(
            calls[i], 1,
            "item {i} was committed before the kill and ran again"
        );
    }
    drop(server);
}

#[tokio::test]
async fn postgres_keeps_waiting_runs_across_a_restart() {
    let dsn = pg::fresh_database().await;
    let app = spawn_app_with(|c| c.database.dsn = dsn.clone()).await;
    let wf = create(
        &app,
        json!({"name": "callback", "steps": [
            {"name": "ci", "action": "event", "input": {"name": "done"}}
        ]}),
    )
    .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&run, "WAITING").await;
    let dir = app.stop().await;
    let app = spawn_app_in(dir, |c| c.database.dsn = dsn).await;
    let sent = app
        .post(
            &format!("/v1/runs/{run}/events/done"),
            &json!({"data": "ok"}),
        )
        .await;
    assert_eq!(sent.status(), 200);
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["steps"][0]["output"], "ok");
}

#[tokio::test]
async fn canceling_a_run_during_a_foreach_or_a_wait_ends_it_within_a_second() {
    let app = spawn_app_with(|_| {}).await;
    let target = Target::start().await;
    target.hold();
    let fan = create(
        &app,
        json!({"name": "fan", "steps": [
            {"name": "each", "action": "http", "foreach": "{{ [1, 2, 3, 4, 5, 6] }}", "concurrency": 2,
             "input": {"url": target.url("/hold")}}
        ]}),
    )
    .await;
    let nap = create(
        &app,
        json!({"name": "nap", "steps": [
            {"name": "nap", "action": "wait", "input": {"duration_ms": 600000}}
        ]}),
    )
    .await;
    let fan_run = app.start_run(&fan, json!({})).await;
    target.wait_in_flight(2).await;
    let nap_run = app.start_run(&nap, json!({})).await;
    app.wait_for_status(&nap_run, "WAITING").await;
    for run in [&fan_run, &nap_run] {
        let asked = Instant::now();
        let response = app
            .post(&format!("/v1/runs/{run}/cancel"), &json!({}))
            .await;
        assert_eq!(response.status(), 200);
        let done = app.wait_until_finished(run).await;
        assert_eq!(done["status"], "CANCELED");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
    }
    let done = app.run(&fan_run).await;
    let statuses: Vec<&str> = done["steps"][0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "CANCELED", "CANCELED", "SKIPPED", "SKIPPED", "SKIPPED", "SKIPPED"
        ]
    );
    target.release();
}

#[tokio::test]
async fn runs_waiting_on_a_timer_or_an_event_survive_a_kill() {
    use crate::helpers::{ServerProcess, write_config};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let server = ServerProcess::start(&config);
    let client = reqwest::Client::new();
    let post = |server: &ServerProcess, path: &str, body: Value| {
        let request = client.post(format!("{}{path}", server.address)).json(&body);
        async move { request.send().await.unwrap() }
    };
    let wf: Value = post(
        &server,
        "/v1/workflows",
        json!({"name": "both", "steps": [
            {"name": "nap", "action": "wait", "input": {"duration_ms": 1500}, "depends_on": []},
            {"name": "ci", "action": "event", "input": {"name": "done"}, "depends_on": []}
        ]}),
    )
    .await
    .json()
    .await
    .unwrap();
    let run: Value = post(&server, "/v1/runs", json!({"workflow_id": wf["id"]}))
        .await
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_owned();
    let read = |server: &ServerProcess| {
        let request = client.get(format!("{}/v1/runs/{id}", server.address));
        async move { request.send().await.ok()?.json::<Value>().await.ok() }
    };
    wait_until("the run to wait", || async {
        let run = read(&server).await?;
        (run["status"] == "WAITING").then_some(())
    })
    .await;
    server.kill();
    let server = ServerProcess::start(&config);
    let sent = post(
        &server,
        &format!("/v1/runs/{id}/events/done"),
        json!({"data": 1}),
    )
    .await;
    assert_eq!(sent.status(), 200);
    let done = wait_until("the run to finish after the kill", || async {
        let run = read(&server).await?;
        (run["status"] == "SUCCEEDED").then_some(run)
    })
    .await;
    assert_eq!(done["steps"][0]["status"], "SUCCEEDED");
    assert_eq!(done["steps"][1]["output"], 1);
}
