//! Schedules, webhook triggers and the activity feed in the console: listed, acted on
//! (pause, resume, run now, create with the server's pointers marked), what started a run,
//! and the feed's newest events followed live across dropped connections.

use std::collections::BTreeSet;

use fantoccini::Locator;
use serde_json::{Value, json};

use crate::browser::Browser;
use crate::helpers::{TestApp, spawn_app, wait_until};
use crate::{ADMIN, READER, gated, secured};
use orchestrator::triggers::webhook::sign;

const SECRET: &str = "hook-secret-0123";

fn quick() -> Value {
    json!({"id": "quick", "name": "quick", "steps": [
        {"name": "only", "action": "transform", "input": {"value": "{{ context.who }}"}}]})
}

async fn created(app: &TestApp, path: &str, body: Value) -> Value {
    let response = app.post(path, &body).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

/// Picks `value` in the `<select>` matching `css`, once that option is there.
async fn choose(browser: &Browser, css: &str, value: &str) {
    browser
        .find(&format!("{css} option[value='{value}']"))
        .await;
    let select = browser.client.find(Locator::Css(css)).await.unwrap();
    select.select_by_value(value).await.unwrap();
}

/// The run id of the page the browser shows (`#/runs/{id}`).
async fn shown_run(browser: &Browser) -> String {
    let url = browser.client.current_url().await.unwrap();
    let fragment = url.fragment().unwrap_or_default().to_owned();
    fragment
        .strip_prefix("/runs/")
        .unwrap_or_else(|| panic!("not a run page: {url}"))
        .to_owned()
}

#[tokio::test]
async fn schedules_are_resumed_run_now_and_created_from_the_console_with_pointers_marked() {
    let app = secured().await;
    app.create_workflow(&gated()).await;
    created(
        &app,
        "/v1/schedules",
        json!({"id": "nightly", "workflow_id": "gated", "cron": "0 2 * * *",
               "timezone": "Europe/Berlin", "paused": true, "context": {"who": "cron"}}),
    )
    .await;
    let browser = Browser::open(&app).await;
    browser.sign_in(ADMIN).await;
    browser.click("#nav a[href='#/schedules']").await;
    let row = "#schedules tr[data-id='nightly']";
    browser.wait_text(row, "PAUSED").await;
    browser.wait_text(row, "Europe/Berlin").await;

    browser
        .click(&format!("{row} [data-action='resume']"))
        .await;
    browser.wait_attr(row, "data-paused", "false").await;
    browser.wait_text(&format!("{row} td.next"), "in ").await;
    let schedule: Value = app.get("/v1/schedules/nightly").await.json().await.unwrap();
    assert_eq!(schedule["paused"], false);
    assert!(schedule["next_fire_at"].is_string(), "{schedule}");

    browser
        .click(&format!("{row} [data-action='trigger']"))
        .await;
    browser.wait_text("#trigger", "Started by a schedule").await;
    browser.wait_text("#trigger", "nightly").await;
    let run = app.run(&shown_run(&browser).await).await;
    assert_eq!(run["trigger"]["type"], "schedule");
    assert_eq!(run["trigger"]["id"], "nightly");
    assert_eq!(run["context"]["who"], "cron");

    browser.click("#nav a[href='#/schedules']").await;
    choose(&browser, "#schedule-workflow", "gated").await;
    browser.type_into("#schedule-cron", "61 * * * *").await;
    browser.type_into("#schedule-id", "every-five").await;
    browser.click("#create-schedule").await;
    browser.wait_text("#schedule-form .problem", "/cron").await;
    browser
        .wait_attr("#schedule-cron", "aria-invalid", "true")
        .await;
    browser.type_into("#schedule-cron", "*/5 * * * *").await;
    browser
        .type_into("#schedule-timezone", "Mars/Olympus")
        .await;
    browser.click("#create-schedule").await;
    browser
        .wait_attr("#schedule-timezone", "aria-invalid", "true")
        .await;
    browser
        .type_into("#schedule-timezone", "America/New_York")
        .await;
    browser.click("#create-schedule").await;
    browser
        .wait_text("#schedules tr[data-id='every-five']", "*/5 * * * *")
        .await;
    let stored: Value = app
        .get("/v1/schedules/every-five")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["timezone"], "America/New_York");
    assert_eq!(stored["overlap"], "skip");
    browser.screenshot("schedules").await;
    browser.finish().await;
}

#[tokio::test]
async fn a_webhook_trigger_shows_its_url_and_its_run_shows_the_request_without_credentials() {
    let app = secured().await;
    app.create_workflow(&gated()).await;
    created(
        &app,
        "/v1/triggers",
        json!({"name": "github-push", "workflow_id": "gated", "secret": SECRET,
               "context": {"who": "{{ request.body.pusher.name }}"},
               "filter": "request.headers['x-github-event'] == 'push'"}),
    )
    .await;
    let browser = Browser::open(&app).await;
    browser.sign_in(ADMIN).await;
    browser.click("#nav a[href='#/triggers']").await;
    let row = "#triggers tr[data-id='github-push']";
    let text = browser.wait_text(row, "/hooks/github-push").await;
    assert!(
        text.contains(&format!("POST {}/hooks/github-push", app.address)),
        "{text}"
    );
    assert!(text.contains("X-Hub-Signature-256"), "{text}");
    assert!(!text.contains(SECRET), "{text}");

    let body = r#"{"pusher": {"name": "ada"}, "ref": "refs/heads/main"}"#;
    let signature = sign(SECRET, body.as_bytes());
    let answer: Value = reqwest::Client::new()
        .post(app.url("/hooks/github-push"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "delivery-1")
        .header("X-Hub-Signature-256", &signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = answer["run_id"].as_str().unwrap().to_owned();
    browser.go(&format!("#/runs/{run}")).await;
    browser.wait_text("#trigger", "Started by a webhook").await;
    browser.wait_text("#trigger", "delivery-1").await;
    browser.click("#trigger-request summary").await;
    let shown = browser
        .wait_text("#trigger-request", "x-github-event")
        .await;
    assert!(shown.contains("refs/heads/main"), "{shown}");
    assert!(shown.contains("***"), "{shown}");
    assert!(
        !shown.contains(&signature[7..]),
        "the signature is shown: {shown}"
    );
    browser.wait_text("#context", "ada").await;
    browser.screenshot("run-webhook").await;

    browser.click("#nav a[href='#/triggers']").await;
    browser.type_into("#trigger-name", "broken").await;
    choose(&browser, "#trigger-workflow", "gated").await;
    browser
        .type_into("#trigger-filter", "request.body.x ==")
        .await;
    browser.click("#create-trigger").await;
    browser.wait_text("#trigger-form .problem", "/filter").await;
    browser
        .wait_attr("#trigger-filter", "aria-invalid", "true")
        .await;
    assert_eq!(app.get("/v1/triggers/broken").await.status(), 404);
    browser.screenshot("triggers").await;
    browser.finish().await;
}

#[tokio::test]
async fn a_reader_sees_schedules_and_triggers_but_no_actions_or_forms() {
    let app = secured().await;
    app.create_workflow(&gated()).await;
    created(
        &app,
        "/v1/schedules",
        json!({"id": "nightly", "workflow_id": "gated", "cron": "@daily"}),
    )
    .await;
    created(
        &app,
        "/v1/triggers",
        json!({"name": "ci", "workflow_id": "gated"}),
    )
    .await;
    let browser = Browser::open(&app).await;
    browser.sign_in(READER).await;
    browser.click("#nav a[href='#/schedules']").await;
    browser
        .wait_text("#schedules tr[data-id='nightly']", "@daily")
        .await;
    assert_eq!(browser.count("#schedules button").await, 0);
    assert_eq!(browser.count("#schedule-form").await, 0);
    browser.click("#nav a[href='#/triggers']").await;
    browser
        .wait_text("#triggers tr[data-id='ci']", "admin token")
        .await;
    assert_eq!(browser.count("#triggers button").await, 0);
    assert_eq!(browser.count("#trigger-form").await, 0);
    browser.finish().await;
}

/// Ids of the events the page shows, newest first.
async fn shown_ids(browser: &Browser) -> Vec<u64> {
    let ids = browser
        .client
        .execute(
            "return [...document.querySelectorAll('#events tbody tr')].map((r) => Number(r.dataset.id))",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(ids).unwrap()
}

/// Every event id the server has, oldest first.
async fn all_ids(app: &TestApp) -> Vec<u64> {
    let page: Value = app.get("/v1/events?limit=500").await.json().await.unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

/// Waits until the page shows exactly the newest `n` events of the server, newest first.
async fn shows_the_newest(browser: &Browser, app: &TestApp, n: usize) {
    wait_until(&format!("the newest {n} events on the page"), || async {
        let all = all_ids(app).await;
        let want: Vec<u64> = all.iter().rev().take(n).copied().collect();
        (shown_ids(browser).await == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_activity_page_shows_the_newest_events_then_follows_live_across_dropped_connections() {
    let app = spawn_app().await;
    app.create_workflow(&quick()).await;
    for i in 0..30 {
        let run = app.start_run("quick", json!({"who": i})).await;
        app.wait_until_finished(&run).await;
    }
    let before = all_ids(&app).await;
    assert!(before.len() > 100, "{} events", before.len());

    let browser = Browser::open(&app).await;
    browser.go("#/activity").await;
    browser
        .wait_attr("#stream-state", "data-state", "live")
        .await;
    shows_the_newest(&browser, &app, 100).await;

    let live = app.start_run("quick", json!({"who": "live"})).await;
    app.wait_until_finished(&live).await;
    browser
        .find(&format!(
            "#events tbody tr:first-child a[href='#/runs/{live}']"
        ))
        .await;
    let grown = all_ids(&app).await.len() - before.len();
    shows_the_newest(&browser, &app, 100 + grown).await;

    browser
        .client
        .execute("window.__orchestrator.dropStreams()", vec![])
        .await
        .unwrap();
    let after_drop = app.start_run("quick", json!({"who": "after"})).await;
    app.wait_until_finished(&after_drop).await;
    let total = all_ids(&app).await.len() - before.len() + 100;
    shows_the_newest(&browser, &app, total).await;
    let ids = shown_ids(&browser).await;
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len());
    browser.screenshot("activity").await;

    browser.type_into("#filter-type", "run.succeeded").await;
    browser.type_into("#filter-run_id", &live).await;
    browser.click("form.filters button[type=submit]").await;
    browser.wait_count("#events tbody tr", 1).await;
    browser.wait_text("#events tbody tr", "run.succeeded").await;
    browser.finish().await;
}
