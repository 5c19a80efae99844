//! The client's `schedules`, `triggers` and `events [-f]` against a real server: tables,
//! `-o json`, pause / resume / trigger now, and following the feed across cut connections
//! without a duplicate or a gap.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::client::{cli, gated, json_out, orchestrator, stderr, stdout};
use crate::client_follow::CuttingProxy;
use crate::helpers::{TestApp, spawn_app, wait_until};

async fn created(app: &TestApp, path: &str, body: Value) {
    let response = app.post(path, &body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn schedules_are_listed_paused_resumed_and_run_now_and_triggers_listed() {
    let app = spawn_app().await;
    app.create_workflow(&gated()).await;
    created(
        &app,
        "/v1/schedules",
        json!({"id": "nightly", "workflow_id": "gated", "cron": "30 2 * * *",
               "timezone": "Europe/Berlin", "paused": true}),
    )
    .await;
    created(
        &app,
        "/v1/triggers",
        json!({"name": "github-push", "workflow_id": "gated", "secret": "s3cret",
               "filter": "request.body.ref == 'refs/heads/main'"}),
    )
    .await;
    created(
        &app,
        "/v1/triggers",
        json!({"name": "ci", "workflow_id": "gated"}),
    )
    .await;
    let server = app.address.as_str();

    let out = cli(server, &["schedules"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("SCHEDULE  WORKFLOW  CRON"), "{table}");
    assert!(
        lines[1].starts_with("nightly   gated     30 2 * * *"),
        "{table}"
    );
    assert!(
        lines[1].contains("Europe/Berlin") && lines[1].contains("paused"),
        "{table}"
    );

    let out = cli(server, &["schedules", "resume", "nightly"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("Resumed nightly: next tick in "),
        "{}",
        stdout(&out)
    );
    let stored: Value = app.get("/v1/schedules/nightly").await.json().await.unwrap();
    assert_eq!(stored["paused"], false);
    let out = cli(server, &["schedules", "pause", "nightly", "-o", "json"]).await;
    let paused = json_out(&out);
    assert_eq!(paused["paused"], true);
    assert!(paused["next_fire_at"].is_null());

    let run = json_out(&cli(server, &["-o", "json", "schedules", "trigger", "nightly"]).await);
    assert_eq!(run["trigger"]["type"], "schedule");
    assert_eq!(run["trigger"]["id"], "nightly");
    let out = cli(server, &["schedules", "trigger", "nightly"]).await;
    assert!(
        stdout(&out).starts_with("Started run_")
            && stdout(&out).contains("(schedule nightly, workflow gated)"),
        "{}",
        stdout(&out)
    );

    let out = cli(server, &["schedules", "pause", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));

    let out = cli(server, &["triggers"]).await;
    let table = stdout(&out);
    assert!(table.starts_with("TRIGGER      WORKFLOW  URL"), "{table}");
    assert!(
        table.contains("ci           gated     /hooks/ci           admin token"),
        "{table}"
    );
    assert!(
        table.contains("X-Hub-Signature-256  request.body.ref == 'refs/heads/main'"),
        "{table}"
    );
    assert!(!table.contains("s3cret"), "{table}");
    let listed = json_out(&cli(server, &["triggers", "-o", "json"]).await);
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci", "github-push"]);

    let empty = spawn_app().await;
    let out = cli(&empty.address, &["schedules"]).await;
    assert_eq!(stdout(&out), "No schedules.\n");
}

fn quick() -> Value {
    json!({"id": "quick", "name": "quick", "steps": [
        {"name": "only", "action": "transform", "input": {"value": 1}}]})
}

async fn finished_runs(app: &TestApp, n: usize) {
    for _ in 0..n {
        let run = app.start_run("quick", json!({})).await;
        app.wait_until_finished(&run).await;
    }
}

/// Every event id on the server after `after`, oldest first.
async fn ids_after(app: &TestApp, after: u64) -> Vec<u64> {
    let page: Value = app
        .get(&format!("/v1/events?after={after}&limit=500"))
        .await
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

fn printed_ids(out: &str) -> Vec<u64> {
    out.lines()
        .map(|l| {
            let event: Value = serde_json::from_str(l).expect("one JSON event per line");
            event["id"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn events_prints_the_newest_or_those_after_an_id_with_filters() {
    let app = spawn_app().await;
    app.create_workflow(&quick()).await;
    finished_runs(&app, 4).await;
    let all = ids_after(&app, 0).await;
    let server = app.address.as_str();

    let out = cli(server, &["events", "--limit", "5", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(printed_ids(&stdout(&out)), all[all.len() - 5..]);

    let out = cli(
        server,
        &["events", "--after", &all[2].to_string(), "-o", "json"],
    )
    .await;
    assert_eq!(printed_ids(&stdout(&out)), all[3..]);

    let out = cli(server, &["events", "--type", "run.succeeded,run.started"]).await;
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 8, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains(" run.succeeded ") || l.contains(" run.started ")),
        "{text}"
    );
    assert!(text.lines().last().unwrap().contains("SUCCEEDED"), "{text}");

    let out = cli(server, &["events", "--limit", "3", "--after", "1"]).await;
    assert_eq!(out.status.code(), Some(2), "--limit and --after conflict");
}

/// A running `events -f -o json`, its lines collected as they come.
struct Follower {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(server: &str, args: &[&str]) -> Self {
        let mut child = orchestrator(server)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        tokio::spawn(async move {
            let mut out = BufReader::new(out).lines();
            while let Ok(Some(line)) = out.next_line().await {
                seen.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn ids(&self) -> Vec<u64> {
        printed_ids(&self.lines.lock().unwrap().join("\n"))
    }

    /// Waits until exactly `want` was printed (nothing more, nothing less).
    async fn wait_for(&self, want: &[u64]) {
        wait_until("events -f to print every event once", || async {
            let ids = self.ids();
            assert!(
                ids.len() <= want.len(),
                "{ids:?} printed, {want:?} expected"
            );
            (ids == want).then_some(())
        })
        .await
    }
}

#[tokio::test]
async fn events_follow_prints_every_later_event_once_across_cut_connections() {
    let app = spawn_app().await;
    app.create_workflow(&quick()).await;
    finished_runs(&app, 3).await;
    let all = ids_after(&app, 0).await;
    let start = all[all.len() - 1];
    // The first connection reads the newest event (a short answer, under the budget); the
    // two streams after it are cut part-way through, wherever 700 bytes fall.
    let proxy = CuttingProxy::start(&app.address, 3, 700).await;
    let mut follower = Follower::start(
        &proxy.address,
        &["events", "-f", "--limit", "1", "-o", "json"],
    );
    let mut want = vec![start];
    follower.wait_for(&want).await;
    finished_runs(&app, 2).await;
    want.extend(ids_after(&app, *want.last().unwrap()).await);
    follower.wait_for(&want).await;
    proxy.cut_all();
    finished_runs(&app, 2).await;
    want.extend(ids_after(&app, *want.last().unwrap()).await);
    follower.wait_for(&want).await;
    assert_eq!(want, ids_after(&app, start - 1).await);
    assert!(proxy.cuts.load(Ordering::SeqCst) >= 3);
    assert!(proxy.connections.load(Ordering::SeqCst) >= 4);
    follower.child.kill().await.unwrap();
}
