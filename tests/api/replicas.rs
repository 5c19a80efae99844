//! Several replicas of the real binary on one PostgreSQL database, and faults: a replica
//! killed mid-flight, PostgreSQL restarted under load, decisions taken on a replica that
//! does not execute the run. A local downstream counts every step call by its
//! `Idempotency-Key` (`<run id>/<step name>`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use orchestrator::store::Store;
use orchestrator::store::postgres::{PgOptions, PostgresStore};

use crate::helpers::ServerProcess;
use crate::pg;

/// Bound for waits in these tests (a 2-core machine shared with compilers).
const LONG_PATIENCE: Duration = Duration::from_secs(90);

/// Every step call: its idempotency key and when it arrived.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<(String, Instant)>>>);

impl Calls {
    fn snapshot(&self) -> Vec<(String, Instant)> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn count_for(&self, run_id: &str) -> usize {
        let prefix = format!("{run_id}/");
        self.snapshot()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .count()
    }
}

struct Recorder {
    calls: Calls,
    delay: Duration,
}

impl Respond for Recorder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let key = request
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        self.calls.0.lock().unwrap().push((key, Instant::now()));
        ResponseTemplate::new(200)
            .set_body_json(json!({"ok": true}))
            .set_delay(self.delay)
    }
}

async fn downstream(delay: Duration) -> (MockServer, Calls) {
    let server = MockServer::start().await;
    let calls = Calls::default();
    Mock::given(method("POST"))
        .respond_with(Recorder {
            calls: calls.clone(),
            delay,
        })
        .mount(&server)
        .await;
    (server, calls)
}

/// Writes the config of one replica sharing the database at `dsn`, with its own
/// `server.id` (replicas sharing a database need different ids). The lease is short so
/// that a killed replica's runs are taken over quickly, but not so short that a replica
/// slowed down by a loaded machine loses runs it is still executing (that would be a
/// takeover, and a repeated call, the kill test would rightly count).
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

/// A workflow of `steps` http steps calling `url`, optionally pausing before one of them.
fn http_workflow(url: &str, steps: usize, approval_before: Option<usize>) -> Value {
    let steps: Vec<Value> = (0..steps)
        .map(|i| {
            let mut step = json!({"name": format!("s{i}"), "action": "http",
                                  "input": {"method": "POST", "url": url, "body": {"i": i}}});
            if approval_before == Some(i) {
                step["requires_approval"] = json!(true);
            }
            step
        })
        .collect();
    json!({"name": "replicated", "steps": steps})
}

async fn post(client: &reqwest::Client, server: &ServerProcess, path: &str, body: &Value) -> Value {
    let response = client
        .post(format!("{}{path}", server.address))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

async fn get_run(client: &reqwest::Client, address: &str, id: &str) -> Option<Value> {
    let response = client
        .get(format!("{address}/v1/runs/{id}"))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// Polls until `done` holds, for at most `patience`.
async fn eventually<F, Fut>(what: &str, patience: Duration, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_succeeded(client: &reqwest::Client, address: &str, ids: &[String]) -> bool {
    let runs = join_all(ids.iter().map(|id| get_run(client, address, id))).await;
    runs.iter()
        .all(|r| r.as_ref().is_some_and(|r| r["status"] == "SUCCEEDED"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_mid_flight_lets_the_other_finish_every_run_without_repeating_finished_steps()
 {
    let dsn = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (mock, calls) = downstream(Duration::from_millis(30)).await;
    let a = ServerProcess::start(&replica_config(dir.path(), "a", &dsn));
    let b = ServerProcess::start(&replica_config(dir.path(), "b", &dsn));
    let client = reqwest::Client::new();
    let wf = post(
        &client,
        &a,
        "/v1/workflows",
        &http_workflow(&mock.uri(), 3, None),
    )
    .await;
    let wf_id = wf["id"].as_str().unwrap().to_owned();
    let starts = (0..200).map(|i| {
        let server = if i % 2 == 0 { &a } else { &b };
        let body = json!({"workflow_id": wf_id, "context": {"i": i}});
        let client = client.clone();
        async move { post(&client, server, "/v1/runs", &body).await }
    });
    let ids: Vec<String> = join_all(starts)
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    eventually("a third of the step calls", LONG_PATIENCE, || async {
        calls.count() >= 200
    })
    .await;
    let killed_at = Instant::now();
    a.kill();
    eventually(
        "every run to succeed on the survivor",
        LONG_PATIENCE,
        || all_succeeded(&client, &b.address, &ids),
    )
    .await;
    let mut by_key: HashMap<String, Vec<Instant>> = HashMap::new();
    for (key, at) in calls.snapshot() {
        by_key.entry(key).or_default().push(at);
    }
    for id in &ids {
        for step in ["s0", "s1", "s2"] {
            assert!(
                by_key.contains_key(&format!("{id}/{step}")),
                "{id}/{step} never ran"
            );
        }
    }
    // A step runs again only when the kill cut its call short: the repeat comes after
    // the kill began, and each run has at most one such step. (The first call may reach
    // the downstream just after `killed_at`: it left the killed replica as it died.)
    let repeated: Vec<(&String, &Vec<Instant>)> =
        by_key.iter().filter(|(_, times)| times.len() > 1).collect();
    for (key, times) in &repeated {
        assert!(times.len() == 2, "{key} ran {} times", times.len());
        assert!(times[1] > killed_at, "{key} ran twice before the kill");
    }
    let mut runs_repeated: Vec<&str> = repeated
        .iter()
        .map(|(k, _)| k.split('/').next().unwrap())
        .collect();
    runs_repeated.sort();
    let before = runs_repeated.len();
    runs_repeated.dedup();
    assert_eq!(before, runs_repeated.len(), "a run repeated two steps");
    assert_eq!(by_key.values().map(Vec::len).sum::<usize>(), calls.count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_continue_after_postgresql_restarts_and_ready_reports_the_outage() {
    let cluster = pg::Cluster::start();
    let dsn = pg::fresh_database_on(&cluster.admin_dsn()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mock, calls) = downstream(Duration::from_millis(150)).await;
    let server = ServerProcess::start(&replica_config(dir.path(), "a", &dsn));
    let client = reqwest::Client::new();
    let wf = post(
        &client,
        &server,
        "/v1/workflows",
        &http_workflow(&mock.uri(), 6, None),
    )
    .await;
    let wf_id = wf["id"].as_str().unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        let run = post(
            &client,
            &server,
            "/v1/runs",
            &json!({"workflow_id": wf_id, "context": {"i": i}}),
        )
        .await;
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    eventually("runs in flight", LONG_PATIENCE, || async {
        calls.count() >= 30
    })
    .await;
    cluster.stop_server();
    let ready = |expected: u16| {
        let client = client.clone();
        let url = format!("{}/ready", server.address);
        async move {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == expected)
        }
    };
    eventually("/ready to report the outage", LONG_PATIENCE, || ready(503)).await;
    let health = client
        .get(format!("{}/health", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the server keeps answering");
    cluster.start_server();
    eventually("/ready once the database is back", LONG_PATIENCE, || {
        ready(200)
    })
    .await;
    eventually("every run to succeed", LONG_PATIENCE, || {
        all_succeeded(&client, &server.address, &ids)
    })
    .await;
    // What was stored: every step succeeded and each run's log has no gap.
    let store = PostgresStore::open(&PgOptions {
        dsn: dsn.clone(),
        pool_size: 2,
        statement_timeout: Duration::from_secs(10),
    })
    .await
    .unwrap();
    for id in &ids {
        let run = get_run(&client, &server.address, id).await.unwrap();
        assert!(
            run["steps"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["status"] == "SUCCEEDED"),
            "{run}"
        );
        let seqs: Vec<u64> = store
            .read_logs(id, 0, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "log of {id} has gaps"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_on_another_replica_resumes_the_run_within_a_second() {
    let dsn = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (mock, calls) = downstream(Duration::ZERO).await;
    let a = ServerProcess::start(&replica_config(dir.path(), "a", &dsn));
    let b = ServerProcess::start(&replica_config(dir.path(), "b", &dsn));
    let client = reqwest::Client::new();
    let wf = post(
        &client,
        &a,
        "/v1/workflows",
        &http_workflow(&mock.uri(), 3, Some(1)),
    )
    .await;
    let run = post(&client, &a, "/v1/runs", &json!({"workflow_id": wf["id"]})).await;
    let id = run["id"].as_str().unwrap().to_owned();
    eventually("the run to wait for approval", LONG_PATIENCE, || async {
        get_run(&client, &a.address, &id)
            .await
            .is_some_and(|r| r["status"] == "WAITING_APPROVAL")
    })
    .await;
    assert_eq!(calls.count_for(&id), 1);
    let approved_at = Instant::now();
    post(
        &client,
        &b,
        &format!("/v1/runs/{id}/approve"),
        &json!({"comment": "go"}),
    )
    .await;
    eventually("the run to finish", Duration::from_secs(1), || async {
        get_run(&client, &a.address, &id)
            .await
            .is_some_and(|r| r["status"] == "SUCCEEDED")
    })
    .await;
    assert!(approved_at.elapsed() < Duration::from_secs(1));
    assert_eq!(calls.count_for(&id), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_on_another_replica_stops_the_owner_at_once() {
    let dsn = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (mock, calls) = downstream(Duration::from_secs(3)).await;
    let a = ServerProcess::start(&replica_config(dir.path(), "a", &dsn));
    let b = ServerProcess::start(&replica_config(dir.path(), "b", &dsn));
    let client = reqwest::Client::new();
    let wf = post(
        &client,
        &a,
        "/v1/workflows",
        &http_workflow(&mock.uri(), 2, None),
    )
    .await;
    let run = post(&client, &a, "/v1/runs", &json!({"workflow_id": wf["id"]})).await;
    let id = run["id"].as_str().unwrap().to_owned();
    eventually("the first call", LONG_PATIENCE, || async {
        calls.count_for(&id) == 1
    })
    .await;
    let canceled = post(&client, &b, &format!("/v1/runs/{id}/cancel"), &json!({})).await;
    assert_eq!(canceled["status"], "CANCELED");
    // The owner hears of it and drops the run: the slow call's answer is never recorded
    // and the second step never starts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let run = get_run(&client, &a.address, &id).await.unwrap();
    assert_eq!(run["status"], "CANCELED", "{run}");
    assert_eq!(calls.count_for(&id), 1);
}
