//! The runs list, a run's DAG and details, and the decisions taken from the console.

use serde_json::json;

use crate::browser::Browser;
use crate::helpers::{TestApp, spawn_app, wait_until};
use crate::{ADMIN, READER, fan_out, gated, secured};

async fn waiting_fan_out(app: &TestApp) -> String {
    app.create_workflow(&fan_out()).await;
    let run = app.start_run("fan", json!({"who": "ada"})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    run
}

#[tokio::test]
async fn the_dag_of_a_fan_out_fan_in_run_shows_every_step_with_its_status() {
    let app = spawn_app().await;
    let run = waiting_fan_out(&app).await;
    let browser = Browser::open(&app).await;
    browser.go(&format!("#/runs/{run}")).await;
    let expected = [
        ("start", "SUCCEEDED", "0"),
        ("b", "SUCCEEDED", "1"),
        ("c", "FAILED", "1"),
        ("d", "SKIPPED", "1"),
        ("join", "WAITING_APPROVAL", "2"),
    ];
    for (step, status, layer) in expected {
        let node = format!("#dag g.node[data-step='{step}']");
        browser.wait_attr(&node, "data-status", status).await;
        browser.wait_attr(&node, "data-layer", layer).await;
    }
    assert_eq!(browser.count("#dag g.node").await, 5);
    assert_eq!(browser.count("#dag path.edge").await, 6);
    // Left to right: the fan-out shares a column between the source and the join.
    let x = |step: &'static str| {
        let browser = &browser;
        async move {
            let node = browser
                .find(&format!("#dag g.node[data-step='{step}']"))
                .await;
            node.attr("data-x")
                .await
                .unwrap()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        }
    };
    let (start, b, c, d, join) = (
        x("start").await,
        x("b").await,
        x("c").await,
        x("d").await,
        x("join").await,
    );
    assert!(
        start < b && b == c && c == d && d < join,
        "{start} {b} {c} {d} {join}"
    );

    browser.click("#dag g.node[data-step='c']").await;
    browser.wait_text("#step-detail h2", "c").await;
    browser
        .wait_text("#step-detail", "condition is false")
        .await;
    assert_eq!(
        browser.count("#step-detail table.attempts tbody tr").await,
        1
    );
    browser.click("#dag g.node[data-step='b']").await;
    browser.wait_text("#step-detail", "context.who").await;
    browser.wait_text("#step-detail", "ada").await;
    browser.screenshot("run").await;
    browser.viewport(390, 844).await;
    browser.find("#dag").await;
    browser.screenshot("run-phone").await;
    browser.finish().await;
}

#[tokio::test]
async fn approving_with_a_comment_and_input_finishes_the_run_after_an_error_shown_with_its_pointer()
{
    let app = spawn_app().await;
    let run = waiting_fan_out(&app).await;
    let browser = Browser::open(&app).await;
    browser.go(&format!("#/runs/{run}")).await;
    let form = "form.approval[data-step='join']";
    browser.find(&format!("{form} #input-ticket")).await;

    browser.type_into("#input-ticket", "nope").await;
    browser.type_into("#comment-join", "looks good").await;
    browser
        .click(&format!("{form} [data-action='approve']"))
        .await;
    browser
        .wait_text(&format!("{form} .problem"), "/input/ticket")
        .await;
    browser
        .wait_text(&format!("{form} .problem"), "input_schema")
        .await;
    browser
        .wait_attr("#input-ticket", "aria-invalid", "true")
        .await;
    browser.screenshot("run-approval-error").await;
    assert_eq!(app.run(&run).await["status"], "WAITING_APPROVAL");

    browser.type_into("#input-ticket", "T-42").await;
    browser.type_into("#input-priority", "3").await;
    browser.click("#input-urgent").await;
    browser
        .click(&format!("{form} [data-action='approve']"))
        .await;
    browser.wait_text(".page-head h1", "SUCCEEDED").await;
    browser.wait_text("#decisions", "looks good").await;
    assert_eq!(browser.count("form.approval").await, 0);

    let done = app.run(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    let approval = &done["approvals"][0];
    assert_eq!(approval["decision"], "approved");
    assert_eq!(approval["comment"], "looks good");
    assert_eq!(
        approval["input"],
        json!({"ticket": "T-42", "priority": 3, "urgent": true})
    );
    assert_eq!(done["context"]["ticket"], "T-42");
    browser.finish().await;
}

#[tokio::test]
async fn canceling_a_run_from_the_console_ends_it_canceled() {
    let app = spawn_app().await;
    app.create_workflow(&gated()).await;
    let run = app.start_run("gated", json!({"who": "ada"})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    let browser = Browser::open(&app).await;
    browser.go(&format!("#/runs/{run}")).await;
    browser.click("[data-action='cancel']").await;
    browser
        .wait_text("dialog.confirm", "Cancel this run?")
        .await;
    browser.click("dialog.confirm [data-confirm]").await;
    browser.wait_text(".page-head h1", "CANCELED").await;
    browser
        .wait_attr("#stream-state", "data-state", "ended")
        .await;
    assert_eq!(browser.count("[data-action='cancel']").await, 0);
    assert_eq!(app.run(&run).await["status"], "CANCELED");
    browser.finish().await;
}

#[tokio::test]
async fn a_reader_sees_everything_but_gets_no_write_button() {
    let app = secured().await;
    let run = waiting_fan_out(&app).await;
    let browser = Browser::open(&app).await;
    browser.sign_in(READER).await;
    browser.wait_text("#who", "grafana · reader").await;

    browser.go("#/workflows/fan").await;
    browser.find("#definition .j-key").await;
    browser.find("#versions tr[data-version='1']").await;
    assert_eq!(browser.count("#start-form").await, 0);
    assert_eq!(browser.count("[data-rollback]").await, 0);

    browser.go(&format!("#/runs/{run}")).await;
    browser
        .wait_attr(
            "#dag g.node[data-step='join']",
            "data-status",
            "WAITING_APPROVAL",
        )
        .await;
    browser
        .wait_text(".notice", "Waiting for an approval of join")
        .await;
    assert_eq!(browser.count("form.approval").await, 0);
    assert_eq!(browser.count("[data-action]").await, 0);
    assert_eq!(browser.count("main button:not(.chip)").await, 0);
    browser.finish().await;
}

#[tokio::test]
async fn runs_are_listed_newest_first_filtered_counted_and_updated_live() {
    let app = secured().await;
    let _ = waiting_fan_out(&app).await;
    app.create_workflow(&gated()).await;
    let first = app.start_run("gated", json!({"who": "a"})).await;
    app.wait_for_status(&first, "WAITING_APPROVAL").await;
    let browser = Browser::open(&app).await;
    browser.sign_in(ADMIN).await;
    browser.go("#/runs").await;
    browser
        .wait_text("#counts [data-status='WAITING_APPROVAL']", "2")
        .await;
    browser.wait_count("#runs tbody tr[data-id]", 2).await;

    let newest = app.start_run("gated", json!({"who": "b"})).await;
    browser.find(&format!("#runs tr[data-id='{newest}']")).await;
    let rows = browser
        .client
        .find_all(fantoccini::Locator::Css("#runs tbody tr"))
        .await
        .unwrap();
    assert_eq!(
        rows[0].attr("data-id").await.unwrap().as_deref(),
        Some(newest.as_str())
    );
    browser
        .wait_text("#counts [data-status='WAITING_APPROVAL']", "3")
        .await;

    app.post(&format!("/v1/runs/{first}/cancel"), &json!({}))
        .await;
    browser
        .wait_attr(
            &format!("#runs tr[data-id='{first}']"),
            "data-status",
            "CANCELED",
        )
        .await;
    browser.find("#filter-workflow option[value='fan']").await;
    browser
        .find("#filter-workflow")
        .await
        .select_by_value("gated")
        .await
        .unwrap();
    browser
        .find("#filter-status")
        .await
        .select_by_value("CANCELED")
        .await
        .unwrap();
    browser.wait_count("#runs tbody tr[data-id]", 1).await;
    browser.find(&format!("#runs tr[data-id='{first}']")).await;
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(
        url.fragment(),
        Some("/runs?workflow_id=gated&status=CANCELED")
    );
    // The active chip clears the status filter again.
    browser.click("#counts [data-status='CANCELED']").await;
    browser.wait_count("#runs tbody tr[data-id]", 2).await;
    browser.find(&format!("#runs tr[data-id='{newest}']")).await;
    browser
        .find("#filter-workflow")
        .await
        .select_by_value("")
        .await
        .unwrap();
    browser.wait_count("#runs tbody tr[data-id]", 3).await;
    browser.screenshot("runs").await;
    browser.finish().await;
}

#[tokio::test]
async fn retrying_a_failed_run_from_the_console_runs_the_failed_step_again() {
    let app = spawn_app().await;
    app.create_workflow(&json!({
        "id": "picky",
        "name": "picky",
        "steps": [
            {"name": "check", "action": "condition", "input": {"if": "context.ok == true", "on_false": "fail"}}
        ]
    }))
    .await;
    let run = app.start_run("picky", json!({"ok": false})).await;
    app.wait_for_status(&run, "FAILED").await;
    let browser = Browser::open(&app).await;
    browser.go(&format!("#/runs/{run}")).await;
    browser
        .wait_attr("#stream-state", "data-state", "ended")
        .await;
    browser.click("[data-action='retry']").await;
    // The run failed again; its stream, ended before, was followed again from where it was.
    let entries = wait_until("the retried run to fail again", || async {
        let entries = app.logs(&run).await;
        let failures = entries
            .iter()
            .filter(|e| e["message"].as_str().unwrap().starts_with("run failed"))
            .count();
        (failures == 2).then_some(entries)
    })
    .await;
    browser
        .wait_text("#log", "re-run 1 requested by anonymous")
        .await;
    browser.wait_count("#log .log-line", entries.len()).await;
    browser.wait_text(".page-head h1", "FAILED").await;
    browser.finish().await;
}
