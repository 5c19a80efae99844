//! The shipped worker and faults around tasks, with real processes: `orchestrator worker`
//! running commands (success, failure, cancel and timeout kill the command, SIGTERM drains,
//! a server that comes late), a worker killed with SIGKILL mid-task, a server killed with
//! SIGKILL with tasks waiting and claimed, and two replicas on PostgreSQL waking each
//! other's polls.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{ServerProcess, TestApp, spawn_app, unused_port, wait_until, write_config};
use crate::tasks::{claim_one, end, task_workflow};

/// `orchestrator worker --server URL --queue QUEUE --exec CMD` (plus `extra` arguments).
fn worker(server: &str, queue: &str, command: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args([
            "worker", "--server", server, "--queue", queue, "--exec", command,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts")
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

async fn read_pid(path: &Path) -> u32 {
    wait_until("the command to write its pid", || async {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    })
    .await
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_worker_completes_with_stdout_and_fails_with_the_tail_of_stderr() {
    let app = spawn_app().await;
    let _echo = Killed(worker(&app.address, "echo", "cat", &["--concurrency", "2"]));
    let _text = Killed(worker(&app.address, "text", "echo hello; echo world", &[]));
    let _fail = Killed(worker(
        &app.address,
        "fail",
        "echo working; echo 'no space left' >&2; exit 3",
        &[],
    ));
    let echo = app.create_workflow(&task_workflow("echo", json!({}))).await;
    let text = app.create_workflow(&task_workflow("text", json!({}))).await;
    let fail = app.create_workflow(&task_workflow("fail", json!({}))).await;
    let runs = [
        app.start_run(&echo, json!({"who": "ada"})).await,
        app.start_run(&text, json!({"who": "x"})).await,
        app.start_run(&fail, json!({"who": "x"})).await,
    ];
    let done = app.wait_for_status(&runs[0], "SUCCEEDED").await;
    assert_eq!(
        done["steps"][0]["output"],
        json!({"who": "ada", "n": 7}),
        "the payload came back on stdout"
    );
    let done = app.wait_for_status(&runs[1], "SUCCEEDED").await;
    assert_eq!(done["steps"][0]["output"], json!("hello\nworld"));
    let failed = app.wait_for_status(&runs[2], "FAILED").await;
    let error = failed["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("exit status 3") && error.contains("no space left"),
        "{error}"
    );
    let workers: Value = app.get("/v1/workers").await.json().await.unwrap();
    assert_eq!(workers["items"].as_array().unwrap().len(), 3, "{workers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_the_run_kills_the_command_and_its_children() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let command = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
    let _w = Killed(worker(&app.address, "slow", &command, &[]));
    let wf = app
        .create_workflow(&task_workflow("slow", json!({"heartbeat_ms": 300})))
        .await;
    let run = app.start_run(&wf, json!({"who": "x"})).await;
    let pid = read_pid(&pid_file).await;
    assert!(alive(pid));
    let response = app
        .post(&format!("/v1/runs/{run}/cancel"), &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    wait_until("the command's child to be killed", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    assert_eq!(app.run(&run).await["status"], "CANCELED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_timeout_ms_is_killed_and_the_attempt_fails() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let command = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let _w = Killed(worker(&app.address, "timeout", &command, &[]));
    let wf = app
        .create_workflow(&task_workflow("timeout", json!({"timeout_ms": 700})))
        .await;
    let run = app.start_run(&wf, json!({"who": "x"})).await;
    let pid = read_pid(&pid_file).await;
    let failed = app.wait_for_status(&run, "FAILED").await;
    let error = failed["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("timed out") && error.contains("timeout_ms"),
        "{error}"
    );
    wait_until("the command to be killed", || async {
        (!alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_task_in_flight_finish_then_the_worker_exits_zero() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let command = format!(
        "touch {}; sleep 1; echo '{{\"greeting\": \"drained\"}}'",
        started.display()
    );
    let mut w = worker(&app.address, "drain", &command, &[]);
    let wf = app
        .create_workflow(&task_workflow("drain", json!({})))
        .await;
    let run = app.start_run(&wf, json!({"who": "x"})).await;
    wait_until("the command to start", || async {
        started.exists().then_some(())
    })
    .await;
    sigterm(&w);
    let done = app.wait_for_status(&run, "SUCCEEDED").await;
    assert_eq!(done["steps"][0]["output"]["greeting"], "drained");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = w.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the worker did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_waits_for_a_server_that_comes_late() {
    let port = unused_port();
    let address = format!("http://127.0.0.1:{port}");
    let _w = Killed(worker(&address, "late", "cat", &[]));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("port: 0", &format!("port: {port}"));
    std::fs::write(&config, text).unwrap();
    let server = ServerProcess::start(&config);
    let client = reqwest::Client::new();
    let wf: Value = client
        .post(format!("{}/v1/workflows", server.address))
        .json(&task_workflow("late", json!({})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run: Value = client
        .post(format!("{}/v1/runs", server.address))
        .json(&json!({"workflow_id": wf["id"], "context": {"who": "late"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_owned();
    wait_until("the late worker to finish the run", || async {
        let run: Value = client
            .get(format!("{}/v1/runs/{id}", server.address))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (run["status"] == "SUCCEEDED").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_loses_the_claim_and_the_task_is_handed_out_again() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let command = format!("touch {}; exec sleep 60", started.display());
    let mut w = worker(&app.address, "crash", &command, &[]);
    let extra = json!({"heartbeat_ms": 500, "retry": {"max": 1, "backoff_ms": 1}});
    let wf = app.create_workflow(&task_workflow("crash", extra)).await;
    let run = app.start_run(&wf, json!({"who": "x"})).await;
    wait_until("the command to start", || async {
        started.exists().then_some(())
    })
    .await;
    w.kill().unwrap();
    w.wait().unwrap();
    let killed = Instant::now();
    let again = claim_one(&app, "crash").await;
    let after = killed.elapsed();
    assert_eq!(again["attempt"], 2);
    assert!(
        after < Duration::from_secs(10),
        "re-delivered {after:?} after the kill"
    );
    let (status, _) = end(
        &app,
        &again,
        "complete",
        json!({"output": {"greeting": "second"}}),
    )
    .await;
    assert_eq!(status, 200);
    let done = app.wait_for_status(&run, "SUCCEEDED").await;
    let attempts = done["steps"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{done}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("heartbeat_ms 500")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_with_tasks_waiting_and_claimed_loses_none_and_ends_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let server = ServerProcess::start(&config);
    let client = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let client = client.clone();
        async move {
            let response = client.post(path).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let extra = json!({"heartbeat_ms": 800, "retry": {"max": 1, "backoff_ms": 1}});
    let (_, wf) = post(
        format!("{}/v1/workflows", server.address),
        task_workflow("durable", extra),
    )
    .await;
    let mut runs = Vec::new();
    for i in 0..4 {
        let body = json!({"workflow_id": wf["id"], "context": {"who": i}});
        let (_, run) = post(format!("{}/v1/runs", server.address), body).await;
        runs.push(run["id"].as_str().unwrap().to_owned());
    }
    let claimed = wait_until("two tasks to be claimed", || async {
        let body = json!({"queues": ["durable"], "worker": "w", "max": 2, "wait_ms": 1000});
        let (_, answer) = post(format!("{}/v1/tasks/poll", server.address), body).await;
        let items = answer["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2).then_some(items)
    })
    .await;
    // One claim ends before the crash; one is held across it; two tasks wait.
    let first = &claimed[0];
    let (status, _) = post(
        format!(
            "{}/v1/tasks/{}/complete",
            server.address,
            first["id"].as_str().unwrap()
        ),
        json!({"token": first["token"], "output": {"greeting": "before"}}),
    )
    .await;
    assert_eq!(status, 200);
    server.kill();
    let server = ServerProcess::start(&config);
    let held = &claimed[1];
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 && Instant::now() < deadline {
        let body = json!({"queues": ["durable"], "worker": "w2", "max": 3, "wait_ms": 1000});
        let (_, answer) = post(format!("{}/v1/tasks/poll", server.address), body).await;
        for task in answer["items"].as_array().cloned().unwrap_or_default() {
            let (status, _) = post(
                format!(
                    "{}/v1/tasks/{}/complete",
                    server.address,
                    task["id"].as_str().unwrap()
                ),
                json!({"token": task["token"], "output": {"greeting": "after"}}),
            )
            .await;
            assert_eq!(status, 200);
            seen.push(task);
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "two waiting tasks and the held one, after its lease: {seen:?}"
    );
    let again = seen
        .iter()
        .find(|t| t["id"] == held["id"])
        .expect("the held task came back");
    assert_eq!(again["attempt"], 2);
    let (status, _) = post(
        format!(
            "{}/v1/tasks/{}/complete",
            server.address,
            held["id"].as_str().unwrap()
        ),
        json!({"token": held["token"], "output": {"greeting": "stale"}}),
    )
    .await;
    assert_eq!(
        status, 409,
        "the claim from before the crash does not count"
    );
    for id in &runs {
        let run = wait_until("every run to succeed", || async {
            let run: Value = client
                .get(format!("{}/v1/runs/{id}", server.address))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (run["status"] == "SUCCEEDED").then_some(run)
        })
        .await;
        assert_ne!(run["steps"][0]["output"]["greeting"], "stale");
    }
}

/// A replica's config on the PostgreSQL database at `dsn`.
fn replica(dir: &Path, name: &str, dsn: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "server:\n  id: {name}\n  host: 127.0.0.1\n  port: 0\n  workers: 2\ndatabase:\n  dsn: {dsn}\n  pool_size: 8\n\
             engine:\n  poll_interval: 1s\n  lease_ttl: 5s\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_parked_on_one_replica_is_woken_by_a_task_from_the_other() {
    let dsn = crate::pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let a = ServerProcess::start(&replica(dir.path(), "a", &dsn));
    let b = ServerProcess::start(&replica(dir.path(), "b", &dsn));
    let client = reqwest::Client::new();
    let wf: Value = client
        .post(format!("{}/v1/workflows", a.address))
        .json(&task_workflow("shared", json!({})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut latencies = Vec::new();
    for i in 0..5 {
        let poll = crate::tasks::parked_poll(
            client.clone(),
            format!("{}/v1/tasks/poll", b.address),
            json!({"queues": ["shared"], "worker": "on-b", "wait_ms": 25000}),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        client
            .post(format!("{}/v1/runs", a.address))
            .json(&json!({"workflow_id": wf["id"], "context": {"who": i}}))
            .send()
            .await
            .unwrap();
        let (answer, at) = poll.await.unwrap();
        let task = &answer["items"][0];
        let enqueued: chrono::DateTime<chrono::Utc> = task["enqueued_at"]
            .as_str()
            .expect("a task, not an empty answer")
            .parse()
            .unwrap();
        latencies.push((at - enqueued).num_milliseconds());
        let id = task["id"].as_str().unwrap();
        let status = client
            .post(format!("{}/v1/tasks/{id}/complete", b.address))
            .json(&json!({"token": task["token"], "output": {"greeting": "across"}}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    eprintln!("a poll on replica b answered {latencies:?} ms after replica a enqueued");
    latencies.sort();
    // Well under the 1 s poll interval: the poll was woken, not polling.
    assert!(latencies[2] < 500, "median {} ms", latencies[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_worker_completes_a_task() {
    let app: TestApp = spawn_app().await;
    let wf = app
        .create_workflow(&task_workflow("greetings", json!({"heartbeat_ms": 300})))
        .await;
    let run = app.start_run(&wf, json!({"who": "ada"})).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/workers/worker.py");
    let mut python = tokio::process::Command::new("python3")
        .args([script, "--queue", "greetings", "--once"])
        .env("ORCHESTRATOR_URL", &app.address)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let done = app.wait_for_status(&run, "SUCCEEDED").await;
    assert_eq!(done["steps"][0]["output"]["greeting"], "hello, ada!");
    assert_eq!(done["context"]["greeting"], "hello, ada!");
    let status = tokio::time::timeout(Duration::from_secs(20), python.wait())
        .await
        .expect("--once exits after its task")
        .unwrap();
    assert!(status.success());
}
