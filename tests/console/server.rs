//! The server in the console: the Server page (id, readiness, lease, retention), the banner
//! on every page while the store refuses writes, and how long a finished run is kept.

use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::helpers::spawn_app_with;

#[tokio::test]
async fn the_server_page_and_a_banner_say_when_the_store_refuses_writes() {
    let app = spawn_app_with(|raw| {
        raw.server.id = "web-5".into();
        raw.retention.runs = Duration::from_secs(3 * 86_400);
    })
    .await;
    let wf = app
        .create_workflow(&json!({"name": "w", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}}]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_until_finished(&run).await;
    let browser = Browser::open(&app).await;

    browser.go(&format!("#/runs/{run}")).await;
    browser.wait_text("#kept-until", "kept until in ").await;

    browser.go("#/server").await;
    browser.wait_text("#server-facts", "web-5").await;
    browser.wait_text("#server-ready", "ready").await;
    browser
        .wait_text("#server-retention", "deleted after 3d")
        .await;
    assert_eq!(browser.count("#banner:not([hidden])").await, 0);
    browser.screenshot("server").await;

    // The store refuses writes: the page and a banner say why, on every page.
    let blocker = rusqlite::Connection::open(app.dir.path().join("orchestrator.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let refused = app
        .post(
            "/v1/workflows",
            &json!({"name": "x", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}}]}),
        )
        .await;
    assert_eq!(refused.status(), 503);
    browser.wait_text("#server-ready", "not ready").await;
    browser.wait_text("#server-facts", "refuses writes").await;
    browser
        .wait_text(
            "#banner",
            "Not ready — the store is unavailable: it refuses writes",
        )
        .await;
    browser.go("#/workflows").await;
    browser.wait_text("#banner", "refuses writes").await;
    browser.screenshot("not-ready-banner").await;

    blocker.execute_batch("ROLLBACK").unwrap();
    browser.wait_count("#banner:not([hidden])", 0).await;
    browser.finish().await;
}
