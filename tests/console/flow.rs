//! Flow control in the console: a run waiting for an event gets a form that sends it
//! (checked against the step's schema), and a `foreach` step shows its items.

use serde_json::json;

use crate::browser::Browser;
use crate::helpers::spawn_app;

#[tokio::test]
async fn an_event_is_sent_from_the_console_after_its_data_was_refused_at_a_pointer() {
    let app = spawn_app().await;
    app.create_workflow(&json!({"id": "ci", "name": "ci", "steps": [
        {"name": "each", "action": "transform", "foreach": "{{ [1, 2, 3] }}",
         "input": {"value": "{{ item }}"}},
        {"name": "built", "action": "event", "input": {"name": "ci.done", "schema": {
            "type": "object", "required": ["build"],
            "properties": {"build": {"type": "string", "minLength": 3}}}}}
    ]}))
    .await;
    let run = app.start_run("ci", json!({})).await;
    app.wait_for_status(&run, "WAITING").await;
    let browser = Browser::open(&app).await;
    browser.go(&format!("#/runs/{run}")).await;
    let form = "form.event-form[data-step='built']";
    browser.find(&format!("{form} #input-build")).await;
    browser.type_into("#input-build", "no").await;
    browser
        .click(&format!("{form} [data-action='send-event']"))
        .await;
    browser
        .wait_text(&format!("{form} .problem"), "/data/build")
        .await;
    assert_eq!(app.run(&run).await["status"], "WAITING");
    browser.screenshot("run-event-error").await;

    browser.type_into("#input-build", "b-42").await;
    browser
        .click(&format!("{form} [data-action='send-event']"))
        .await;
    browser.wait_text(".page-head h1", "SUCCEEDED").await;
    assert_eq!(browser.count("form.event-form").await, 0);
    let done = app.run(&run).await;
    assert_eq!(done["steps"][1]["output"], json!({"build": "b-42"}));

    browser.click("#dag g.node[data-step='each']").await;
    browser.wait_text("#step-detail", "Items (3)").await;
    browser.wait_text("#step-detail", "3 succeeded").await;
    browser.finish().await;
}
