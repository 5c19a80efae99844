//! `orchestrator status` and the retention line of `orchestrator get`: the real binary
//! against a real server, ready and while its store refuses writes.

use serde_json::json;

use crate::client::{cli, json_out, stderr, stdout};
use crate::helpers::spawn_app_with;

#[tokio::test]
async fn status_shows_the_server_and_exits_1_with_the_reason_while_writes_are_refused() {
    let app = spawn_app_with(|raw| raw.server.id = "web-3".into()).await;
    let out = cli(&app.address, &["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Server:    web-3 (orchestrator "), "{text}");
    assert!(text.contains("sqlite store"), "{text}");
    assert!(text.contains("Ready:     yes"), "{text}");
    assert!(text.contains("Lease:     30s"), "{text}");
    assert!(
        text.contains("finished runs 30d, hook events 7d; checked every 1m"),
        "{text}"
    );
    assert!(text.contains("Hooks:     none configured"), "{text}");
    let doc = json_out(&cli(&app.address, &["status", "-o", "json"]).await);
    assert_eq!(doc["id"], "web-3");
    assert_eq!(doc["ready"], true);

    let blocker = rusqlite::Connection::open(app.dir.path().join("orchestrator.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let refused = app
        .post(
            "/v1/workflows",
            &json!({"name": "w", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}}]}),
        )
        .await;
    assert_eq!(refused.status(), 503);
    let out = cli(&app.address, &["status"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Ready:     no: the store is unavailable: it refuses writes"),
        "{text}"
    );
    blocker.execute_batch("ROLLBACK").unwrap();
}

#[tokio::test]
async fn get_says_until_when_a_finished_run_is_kept() {
    let app =
        spawn_app_with(|raw| raw.retention.runs = std::time::Duration::from_secs(3 * 86_400)).await;
    let wf = app
        .create_workflow(&json!({"name": "w", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}}]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let finished = app.wait_until_finished(&run).await;
    let finished_at =
        chrono::DateTime::parse_from_rfc3339(finished["finished_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
    let until = (finished_at + chrono::Duration::days(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = cli(&app.address, &["get", &run]).await;
    let text = stdout(&out);
    assert!(
        text.contains(&format!("Kept:     until {until} (in ")),
        "{text}"
    );

    let keep_all = spawn_app_with(|raw| raw.retention.runs = std::time::Duration::ZERO).await;
    let wf = keep_all
        .create_workflow(&json!({"name": "w", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}}]}))
        .await;
    let run = keep_all.start_run(&wf, json!({})).await;
    keep_all.wait_until_finished(&run).await;
    let text = stdout(&cli(&keep_all.address, &["get", &run]).await);
    assert!(
        !text.contains("Kept:"),
        "runs kept forever say nothing: {text}"
    );
}
