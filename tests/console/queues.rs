//! The queues page: queues with what waits and is in flight, the workers polling them, and
//! a run's step waiting for a worker linking to it.

use serde_json::json;

use crate::browser::Browser;
use crate::helpers::spawn_app;

#[tokio::test]
async fn the_queues_page_lists_queues_and_workers_and_a_waiting_step_links_to_it() {
    let app = spawn_app().await;
    app.create_workflow(&json!({"id": "render", "name": "render", "steps": [
        {"name": "thumbnail", "action": "task", "input": {"queue": "images", "payload": {"n": 1}}}
    ]}))
    .await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let run = app.start_run("render", json!({})).await;
        app.wait_for_status(&run, "WAITING").await;
        runs.push(run);
    }
    let claimed = app
        .post(
            "/v1/tasks/poll",
            &json!({"queues": ["images"], "worker": "gpu-1", "max": 1}),
        )
        .await;
    assert_eq!(claimed.status(), 200);

    let browser = Browser::open(&app).await;
    browser.go("#/queues").await;
    let row = browser
        .wait_text("#queues tr[data-queue='images']", "gpu-1")
        .await;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["images", "2", "1"], "{row}");
    browser
        .wait_text("#workers tr[data-worker='gpu-1']", "images")
        .await;
    browser.screenshot("queues").await;

    browser.go(&format!("#/runs/{}", runs[2])).await;
    browser.click("#dag g.node[data-step='thumbnail']").await;
    browser
        .wait_text("#step-detail", "Waiting for a worker on queue images")
        .await;
    browser.click("#step-detail a[href='#/queues']").await;
    browser.wait_text("#queues", "images").await;
    browser.finish().await;
}
