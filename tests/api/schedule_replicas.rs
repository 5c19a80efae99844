//! Two replicas of the real binary on one PostgreSQL database fire a one-second schedule:
//! the first alone for a while, then both racing for each tick, until the first is killed
//! (SIGKILL) just as a tick falls due. Every tick still starts exactly one run: the runs,
//! counted by `fire_time`, cover every second of the test once, with no gap and no repeat.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::helpers::ServerProcess;
use crate::pg;

/// How long the schedule runs.
const SPAN: Duration = Duration::from_secs(20);

fn replica_config(dir: &Path, name: &str, dsn: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "server:\n  id: {name}\n  host: 127.0.0.1\n  port: 0\n  workers: 2\n\
         database:\n  dsn: {dsn}\n  pool_size: 8\n  statement_timeout: 10s\n\
         engine:\n  poll_interval: 100ms\n  lease_ttl: 5s\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Value,
) -> Value {
    let response = client
        .request(method, &url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

/// Sleeps until `offset` past the next whole second.
async fn until_next_second(offset: Duration) {
    let now = Utc::now();
    let into = Duration::from_nanos(u64::from(now.timestamp_subsec_nanos()));
    tokio::time::sleep(Duration::from_secs(1) - into + offset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_schedule_fires_every_tick_exactly_once_across_replicas_with_one_killed() {
    let dsn = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let a = ServerProcess::start(&replica_config(dir.path(), "a", &dsn));
    let client = reqwest::Client::new();
    let post = reqwest::Method::POST;
    let wf = send(
        &client,
        post.clone(),
        format!("{}/v1/workflows", a.address),
        json!({"name": "tick", "steps": [{"name": "t", "action": "transform", "input": {"value": 1}}]}),
    )
    .await;
    let created = send(
        &client,
        post.clone(),
        format!("{}/v1/schedules", a.address),
        json!({"id": "every-second", "workflow_id": wf["id"], "cron": "* * * * * *",
               "overlap": "allow"}),
    )
    .await;
    let first_tick: DateTime<Utc> = created["next_fire_at"].as_str().unwrap().parse().unwrap();
    // The first replica fires alone (so it surely fires some ticks), then both race: which
    // wins a given tick is up to timing, and one of them may win them all.
    tokio::time::sleep(SPAN / 4).await;
    let b = ServerProcess::start(&replica_config(dir.path(), "b", &dsn));
    tokio::time::sleep(SPAN / 4).await;
    // Both replicas wake for each tick; kill one a millisecond after a tick falls due,
    // while it may hold the tick's row lock in an open transaction.
    until_next_second(Duration::from_millis(1)).await;
    let fired_by_a = fired(&a.log_lines());
    a.kill();
    tokio::time::sleep(SPAN / 2).await;
    let paused = send(
        &client,
        post,
        format!("{}/v1/schedules/every-second/pause", b.address),
        json!({}),
    )
    .await;
    let last_fire: DateTime<Utc> = paused["last_fire_time"].as_str().unwrap().parse().unwrap();
    let page: Value = client
        .get(format!(
            "{}/v1/runs?workflow_id={}&limit=500",
            b.address,
            wf["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut by_tick: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    for run in page["items"].as_array().unwrap() {
        let t: DateTime<Utc> = run["trigger"]["fire_time"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        *by_tick.entry(t).or_default() += 1;
    }
    let repeated: Vec<_> = by_tick.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "ticks fired more than once: {repeated:?}"
    );
    let seconds = (last_fire - first_tick).num_seconds() + 1;
    assert!(
        seconds as u64 >= SPAN.as_secs() - 2,
        "only {seconds} ticks in {SPAN:?}"
    );
    let missing: Vec<DateTime<Utc>> = (0..seconds)
        .map(|i| first_tick + chrono::Duration::seconds(i))
        .filter(|t| !by_tick.contains_key(t))
        .collect();
    assert!(missing.is_empty(), "ticks that never fired: {missing:?}");
    assert_eq!(by_tick.len() as i64, seconds);
    // Both replicas took part: the first alone before the second started, the second
    // alone after the first was killed.
    let fired_by_b = fired(&b.log_lines());
    eprintln!("ticks fired by a before the kill: {fired_by_a}, by b: {fired_by_b}");
    assert!(
        fired_by_a > 0 && fired_by_b > 0,
        "a: {fired_by_a}, b: {fired_by_b}"
    );
    // A tick the killed replica committed just before dying may be missing from its log.
    let logged = fired_by_a + fired_by_b;
    assert!(
        logged <= by_tick.len() && by_tick.len() <= logged + 1,
        "{logged} logged"
    );
}

/// Ticks a replica's log says it fired.
fn fired(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.contains("schedule fired"))
        .count()
}
