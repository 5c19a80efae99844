//! Signing in, the workflows pages, and starting a run from the console.

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::helpers::{spawn_app, wait_until};
use crate::{ADMIN, fan_out, gated, secured};

#[tokio::test]
async fn a_token_is_asked_for_once_and_kept_for_the_tab_never_in_the_url() {
    let app = secured().await;
    let browser = Browser::open(&app).await;
    browser.find("form.login #token").await;
    browser.screenshot("login").await;

    browser.sign_in("not-a-token-0123456789").await;
    browser.wait_text("form.login .problem", "not valid").await;
    assert_eq!(browser.count("#nav a").await, 0);

    browser.sign_in(ADMIN).await;
    browser.wait_text("#who", "ops · admin").await;
    browser.find("#nav a[href='#/runs']").await;
    // The events feed is not served yet: its page is not offered.
    assert_eq!(browser.count("#nav a[href='#/activity']").await, 0);

    browser.client.refresh().await.unwrap();
    browser.wait_text("#who", "ops · admin").await;
    assert_eq!(browser.count("#token").await, 0, "no second sign-in");
    let url = browser.client.current_url().await.unwrap().to_string();
    assert!(!url.contains(ADMIN), "{url}");
    let kept = browser
        .client
        .execute(
            "return sessionStorage.getItem('orchestrator.token')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(kept, json!(ADMIN));

    browser.click("#who button").await;
    browser.find("form.login #token").await;
    browser.finish().await;
}

#[tokio::test]
async fn a_workflow_created_through_the_api_appears_and_its_versions_compare_and_roll_back() {
    let app = secured().await;
    let browser = Browser::open(&app).await;
    browser.sign_in(ADMIN).await;
    browser.wait_text("#workflows", "No workflows yet").await;

    app.create_workflow(&gated()).await;
    app.create_workflow(&fan_out()).await;
    browser.find("#workflows tr[data-id='gated']").await;
    browser.find("#workflows tr[data-id='fan']").await;
    browser.screenshot("workflows").await;

    browser.click("#workflows tr[data-id='gated'] a").await;
    browser.find("#definition .j-tpl").await;
    let mut v2 = gated();
    v2["description"] = json!("ships after a second look");
    v2["steps"][1]["input"] = json!({"value": 2});
    let replaced = app.put("/v1/workflows/gated", &v2).await;
    assert_eq!(replaced.status(), 200);
    browser.find("#versions tr[data-version='2']").await;
    // The newest two are compared by default: v1 on the left, v2 on the right.
    browser.wait_text("#diff", "changed line").await;
    assert!(browser.count("#diff td.del").await >= 1);
    assert!(browser.count("#diff td.add").await >= 1);
    browser
        .wait_text("#diff", "ships after a second look")
        .await;

    browser.click("#versions [data-rollback='1']").await;
    browser
        .wait_text("dialog.confirm", "Roll back to v1?")
        .await;
    browser.click("dialog.confirm [data-confirm]").await;
    browser
        .wait_text("#versions tr[data-version='3']", "rollback of v1")
        .await;
    let current: Value = app.get("/v1/workflows/gated").await.json().await.unwrap();
    assert_eq!(current["version"], 3);
    assert_eq!(current["restored_from"], 1);
    assert_eq!(current["created_by"], "ops");
    browser.click("input[name='diff-a'][value='1']").await;
    browser.wait_text("#diff", "same definition").await;
    browser.click("input[name='diff-a'][value='2']").await;
    browser.wait_text("#diff", "changed line").await;
    browser.screenshot("workflow").await;
    browser.finish().await;
}

#[tokio::test]
async fn a_run_started_from_the_console_shows_its_log_live_and_resumes_after_a_drop() {
    let app = spawn_app().await;
    app.create_workflow(&gated()).await;
    let browser = Browser::open(&app).await;
    browser.go("#/workflows/gated").await;
    browser.find("#start-form").await;

    browser.type_into("#run-context", "{\"who\": ").await;
    browser.wait_text("#context-check", "Not valid JSON").await;
    assert_eq!(
        browser
            .find("#start-run")
            .await
            .prop("disabled")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    browser.type_into("#run-context", "[1, 2]").await;
    browser
        .wait_text("#context-check", "must be a JSON object")
        .await;
    browser
        .type_into("#run-context", "{\"who\": \"ada\"}")
        .await;
    browser.wait_text("#context-check", "A JSON object").await;
    browser.click("#start-run").await;

    let run = wait_until("the run page", || async {
        let url = browser.client.current_url().await.ok()?;
        let fragment = url.fragment()?.to_owned();
        fragment.strip_prefix("/runs/").map(str::to_owned)
    })
    .await;
    let started = app.wait_for_status(&run, "WAITING_APPROVAL").await;
    assert_eq!(started["context"]["who"], "ada");
    browser.wait_text(".page-head h1", "WAITING_APPROVAL").await;
    browser
        .wait_attr("#stream-state", "data-state", "live")
        .await;

    let posted = app.post_log_lines(&run, "hello from the outside").await;
    assert_eq!(posted.status(), 201);
    browser.wait_text("#log", "hello from the outside").await;

    browser
        .client
        .execute("window.__orchestrator.dropStreams()", vec![])
        .await
        .unwrap();
    let posted = app.post_log_lines(&run, "after the drop").await;
    assert_eq!(posted.status(), 201);
    browser.wait_text("#log", "after the drop").await;
    // Resumed after the last line seen: nothing twice, nothing missed.
    let entries = app.logs(&run).await;
    let shown = browser.count("#log .log-line").await;
    assert_eq!(shown, entries.len(), "each entry once");
    let text = browser.find("#log").await.text().await.unwrap();
    assert_eq!(text.matches("hello from the outside").count(), 1, "{text}");
    browser.finish().await;
}
