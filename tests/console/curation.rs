//! Running a run again with edits, deleting runs, searching runs and archiving workflows
//! from the console.

use serde_json::json;

use crate::browser::Browser;
use crate::helpers::{TestApp, spawn_app, wait_until};
use crate::{ADMIN, gated, secured};

/// `hello` greets `context.who`; `check` fails unless it greeted ada.
fn picky() -> serde_json::Value {
    json!({"id": "picky", "name": "picky", "steps": [
        {"name": "hello", "action": "transform", "input": {"set": {"greeting": "hello {{ context.who }}"}}},
        {"name": "check", "action": "condition", "input": {"key": "greeting", "equals": "hello ada", "on_false": "fail"}}
    ]})
}

async fn failed_run(app: &TestApp, who: &str) -> String {
    let run = app.start_run("picky", json!({"who": who})).await;
    app.wait_for_status(&run, "FAILED").await;
    run
}

#[tokio::test]
async fn running_again_with_edits_records_the_attempt_in_the_history() {
    let app = spawn_app().await;
    app.create_workflow(&picky()).await;
    let run = failed_run(&app, "bob").await;
    let browser = Browser::open(&app).await;
    browser.go(&format!("#/runs/{run}")).await;
    browser
        .wait_attr("#stream-state", "data-state", "ended")
        .await;
    browser.click("[data-action='rerun']").await;
    browser
        .find("#rerun-form #rerun-from option[value='hello']")
        .await;
    browser
        .find("#rerun-from")
        .await
        .select_by_value("hello")
        .await
        .unwrap();
    browser.type_into("#rerun-context", "[1, 2]").await;
    browser
        .wait_text("#rerun-context-check", "JSON object")
        .await;
    browser
        .wait_attr("#rerun-context-check", "class", "json-check bad")
        .await;
    browser
        .type_into("#rerun-context", r#"{"who": "ada"}"#)
        .await;
    browser.type_into("#rerun-reason", "wrong person").await;
    browser.screenshot("run-again-form").await;
    browser.click("[data-action='rerun-submit']").await;
    browser.wait_text(".page-head h1", "SUCCEEDED").await;
    browser.wait_text("#reruns", "wrong person").await;
    browser.wait_text("#reruns", "from step hello").await;
    browser.wait_text("#reruns", "FAILED").await;
    browser
        .wait_text("#log", "re-run 1 requested by anonymous")
        .await;
    assert_eq!(browser.count("#rerun-form").await, 0, "the form closes");
    let done = app.run(&run).await;
    assert_eq!(done["context"]["who"], "ada");
    assert_eq!(done["retries"][0]["reason"], "wrong person");
    browser.screenshot("run-again-history").await;

    // On another version: the DAG follows the version's steps.
    let v2 = json!({"name": "picky", "steps": [
        picky()["steps"][0], picky()["steps"][1],
        {"name": "extra", "action": "transform", "input": {"value": 1}}
    ]});
    assert_eq!(app.put("/v1/workflows/picky", &v2).await.status(), 200);
    browser.click("[data-action='rerun']").await;
    browser.find("#rerun-version option[value='2']").await;
    browser
        .find("#rerun-version")
        .await
        .select_by_value("2")
        .await
        .unwrap();
    browser
        .find("#rerun-from")
        .await
        .select_by_value("check")
        .await
        .unwrap();
    browser.click("[data-action='rerun-submit']").await;
    browser
        .wait_attr("#dag g.node[data-step='extra']", "data-status", "SUCCEEDED")
        .await;
    browser.wait_text("#reruns", "on v2 (was v1)").await;
    browser.finish().await;
}

#[tokio::test]
async fn a_refused_re_run_shows_the_servers_answer() {
    let app = spawn_app().await;
    app.create_workflow(&picky()).await;
    let run = failed_run(&app, "bob").await;
    let v2 = json!({"name": "picky", "steps": [
        {"name": "renamed", "action": "transform", "input": {"value": 1}}, picky()["steps"][1]
    ]});
    assert_eq!(app.put("/v1/workflows/picky", &v2).await.status(), 200);
    let browser = Browser::open(&app).await;
    browser.go(&format!("#/runs/{run}")).await;
    browser.click("[data-action='rerun']").await;
    browser.find("#rerun-version option[value='2']").await;
    browser
        .find("#rerun-version")
        .await
        .select_by_value("2")
        .await
        .unwrap();
    browser
        .find("#rerun-from")
        .await
        .select_by_value("check")
        .await
        .unwrap();
    browser.click("[data-action='rerun-submit']").await;
    browser.wait_text("#rerun-form .problem", "/version").await;
    browser
        .wait_attr("#rerun-version", "aria-invalid", "true")
        .await;
    assert_eq!(app.run(&run).await["status"], "FAILED");
    browser.finish().await;
}

#[tokio::test]
async fn deleting_a_finished_run_leaves_for_the_list_and_the_run_is_gone() {
    let app = spawn_app().await;
    app.create_workflow(&picky()).await;
    let run = failed_run(&app, "bob").await;
    let browser = Browser::open(&app).await;
    browser.go(&format!("#/runs/{run}")).await;
    browser.click("[data-action='delete']").await;
    browser
        .wait_text("dialog.confirm", "Delete this run?")
        .await;
    browser.click("dialog.confirm [data-confirm]").await;
    browser.wait_text(".page-head h1", "Runs").await;
    browser.wait_text("#runs", "No runs match.").await;
    assert_eq!(app.get(&format!("/v1/runs/{run}")).await.status(), 404);
    browser.finish().await;
}

#[tokio::test]
async fn runs_are_searched_by_several_statuses_context_and_version() {
    let app = secured().await;
    app.create_workflow(&picky()).await;
    app.create_workflow(&gated()).await;
    let failed = failed_run(&app, "bob").await;
    let ok = app.start_run("picky", json!({"who": "ada"})).await;
    app.wait_for_status(&ok, "SUCCEEDED").await;
    let waiting = app.start_run("gated", json!({"who": "ada"})).await;
    app.wait_for_status(&waiting, "WAITING_APPROVAL").await;
    let browser = Browser::open(&app).await;
    browser.sign_in(ADMIN).await;
    browser.go("#/runs").await;
    browser.wait_count("#runs tbody tr[data-id]", 3).await;
    browser
        .wait_text("#counts [data-status='SUCCEEDED'] .chip-n", "1")
        .await;

    browser.click("#counts [data-status='FAILED']").await;
    browser.wait_count("#runs tbody tr[data-id]", 1).await;
    browser
        .click("#counts [data-status='WAITING_APPROVAL']")
        .await;
    browser.wait_count("#runs tbody tr[data-id]", 2).await;
    browser.find(&format!("#runs tr[data-id='{failed}']")).await;
    browser
        .find(&format!("#runs tr[data-id='{waiting}']"))
        .await;
    let fragment = || async {
        let url = browser.client.current_url().await.unwrap();
        url.fragment().unwrap_or_default().to_owned()
    };
    assert_eq!(fragment().await, "/runs?status=FAILED%2CWAITING_APPROVAL");

    browser.type_into("#filter-context", "who=ada\n").await;
    browser.wait_count("#runs tbody tr[data-id]", 1).await;
    browser
        .find(&format!("#runs tr[data-id='{waiting}']"))
        .await;
    // Counts follow every filter but the statuses.
    browser
        .wait_text("#counts [data-status='SUCCEEDED'] .chip-n", "1")
        .await;
    browser
        .wait_text("#counts [data-status='FAILED'] .chip-n", "0")
        .await;
    let url = fragment().await;
    assert!(url.contains("context.who=ada"), "{url}");
    browser.screenshot("runs-search").await;

    // The page opens again with the same filters from its URL.
    browser.go("#/workflows").await;
    browser.go(&format!("#{url}")).await;
    browser.wait_count("#runs tbody tr[data-id]", 1).await;
    browser
        .wait_attr("#counts [data-status='FAILED']", "aria-pressed", "true")
        .await;
    browser.type_into("#filter-version", "2\n").await;
    browser.wait_text("#runs", "No runs match.").await;
    browser.type_into("#filter-context", "who\n").await;
    browser
        .wait_attr("#filter-context", "aria-invalid", "true")
        .await;
    // Lists are summaries: the page never read a context.
    let read: bool = wait_until("the page's reads", || async {
        browser
            .client
            .execute(
                "return performance.getEntriesByType('resource').some(e => e.name.includes('/v1/runs?') && e.name.includes('view=summary'))",
                vec![],
            )
            .await
            .ok()?
            .as_bool()
            .filter(|read| *read)
    })
    .await;
    assert!(read);
    browser.finish().await;
}

#[tokio::test]
async fn archiving_a_workflow_hides_it_and_stops_its_runs() {
    let app = spawn_app().await;
    app.create_workflow(&picky()).await;
    app.create_workflow(&gated()).await;
    let browser = Browser::open(&app).await;
    browser.go("#/workflows/picky").await;
    browser.find("#start-form").await;
    browser.click("[data-action='archive']").await;
    browser.wait_text("dialog.confirm", "Archive picky?").await;
    browser.click("dialog.confirm [data-confirm]").await;
    browser
        .wait_text("#archived", "Archived by anonymous")
        .await;
    assert_eq!(browser.count("[data-action='archive']").await, 0);
    assert_eq!(browser.count("[data-rollback]").await, 0);
    let hidden: bool = browser
        .client
        .execute(
            "return document.querySelector('#start-form').hidden",
            vec![],
        )
        .await
        .unwrap()
        .as_bool()
        .unwrap();
    assert!(hidden, "no new runs of an archived workflow");
    let body: serde_json::Value = app.get("/v1/workflows/picky").await.json().await.unwrap();
    assert_eq!(body["archived_by"], "anonymous");

    browser.go("#/workflows").await;
    browser.wait_count("#workflows tbody tr[data-id]", 1).await;
    browser.find("#workflows tr[data-id='gated']").await;
    browser.click("#filter-archived").await;
    browser.wait_count("#workflows tbody tr[data-id]", 2).await;
    browser
        .wait_text("#workflows tr[data-id='picky']", "ARCHIVED")
        .await;
    browser.type_into("#filter-name", "pi").await;
    browser.wait_count("#workflows tbody tr[data-id]", 1).await;
    browser
        .find("#workflows tr[data-id='picky'][data-archived]")
        .await;
    browser.screenshot("workflows-archived").await;
    browser.finish().await;
}
