//! The client following a run's log: `run --follow`, and `logs -f` across connections that a
//! proxy cuts mid-stream and across a server restart, without a duplicate or a gap.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::client::{cli, gated, greet, orchestrator, stderr, stdout};
use crate::helpers::{PATIENCE, ServerProcess, TestApp, spawn_app, wait_until};

#[tokio::test]
async fn run_follow_prints_each_log_line_once_then_the_outcome() {
    let app = spawn_app().await;
    app.create_workflow(&greet()).await;
    let out = cli(
        &app.address,
        &["run", "greet", "--context", r#"{"who": "ada"}"#, "--follow"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("Started run_") && lines[0].contains("(workflow greet, version 1)"),
        "{text}"
    );
    let run = lines[0].split_whitespace().nth(1).unwrap();
    let log = app.logs(run).await;
    assert_eq!(lines.len(), log.len() + 2, "{text}");
    for (line, entry) in lines[1..].iter().zip(&log) {
        assert!(
            line.ends_with(entry["message"].as_str().unwrap()),
            "{line} / {entry}"
        );
    }
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with(&format!("{run} SUCCEEDED after ")),
        "{text}"
    );

    let out = cli(
        &app.address,
        &[
            "run",
            "greet",
            "--context",
            r#"{"who": "bob"}"#,
            "--follow",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed run exits 1: {}",
        stderr(&out)
    );
    let docs: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, entries) = docs.split_last().unwrap();
    assert_eq!(last["status"], "FAILED");
    assert_eq!(
        entries,
        app.logs(last["id"].as_str().unwrap()).await.as_slice()
    );
}

/// Forwards connections to a server; the first `cut` of them are closed after `budget`
/// bytes of the answer, wherever that falls (inside a header, an event or a chunk), and
/// [`CuttingProxy::cut_all`] closes every open connection, as a proxy's idle timeout would.
struct CuttingProxy {
    address: String,
    connections: Arc<AtomicUsize>,
    cuts: Arc<AtomicUsize>,
    cut_all: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    async fn start(upstream: &str, cut: usize, budget: usize) -> Self {
        Self::with(upstream, cut, Some(budget)).await
    }

    /// A proxy that closes its first connection just before `event: end`, when the run's
    /// whole log has gone through: a resume then has nothing left to receive.
    async fn cutting_before_end(upstream: &str) -> Self {
        Self::with(upstream, 1, None).await
    }

    async fn with(upstream: &str, cut: usize, budget: Option<usize>) -> Self {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (cut_all, cut_signal) = tokio::sync::watch::channel(0);
        let (seen, done) = (connections.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let relay = Relay {
                    budget: budget.filter(|_| n < cut),
                    before_end: budget.is_none() && n < cut,
                    cuts: done.clone(),
                    cut_signal: cut_signal.clone(),
                };
                tokio::spawn(relay.run(client, upstream));
            }
        });
        Self {
            address,
            connections,
            cuts,
            cut_all,
            task,
        }
    }

    fn cut_all(&self) {
        self.cut_all.send_modify(|generation| *generation += 1);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Relay {
    budget: Option<usize>,
    before_end: bool,
    cuts: Arc<AtomicUsize>,
    cut_signal: tokio::sync::watch::Receiver<u64>,
}

impl Relay {
    async fn run(mut self, client: TcpStream, upstream: SocketAddr) {
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        self.cut_signal.mark_unchanged();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let requests = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        });
        const END: &[u8] = b"event: end";
        let mut pending = Vec::new();
        let mut sent = 0;
        let mut buffer = [0u8; 256];
        loop {
            let n = tokio::select! {
                read = server_read.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = self.cut_signal.changed() => {
                    self.cuts.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            };
            if self.before_end {
                pending.extend_from_slice(&buffer[..n]);
                let end = pending.windows(END.len()).position(|w| w == END);
                // Hold back a tail that may be the start of `event: end`.
                let upto = end.unwrap_or(pending.len().saturating_sub(END.len()));
                let out: Vec<u8> = pending.drain(..upto).collect();
                if client_write.write_all(&out).await.is_err() || end.is_some() {
                    self.cuts
                        .fetch_add(usize::from(end.is_some()), Ordering::SeqCst);
                    break;
                }
                continue;
            }
            let n = self.budget.map_or(n, |b| n.min(b - sent));
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            sent += n;
            if self.budget.is_some_and(|b| sent >= b) {
                self.cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
        requests.abort();
    }
}

/// A running `logs -f -o json` whose output lines are collected as they come.
struct Follower {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Follower {
    fn start(server: &str, run: &str) -> Self {
        let mut child = orchestrator(server)
            .args(["logs", run, "-f", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let reader = tokio::spawn(async move {
            let mut out = BufReader::new(out).lines();
            while let Ok(Some(line)) = out.next_line().await {
                seen.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            lines,
            reader,
        }
    }

    async fn wait_for_lines(&self, n: usize) {
        wait_until(&format!("{n} lines from logs -f"), || async {
            (self.lines.lock().unwrap().len() >= n).then_some(())
        })
        .await
    }

    /// Waits for the exit (code 0) and returns the entries printed.
    async fn finish(mut self) -> Vec<Value> {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(0));
        self.reader.await.unwrap();
        let lines = self.lines.lock().unwrap().clone();
        lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("one JSON entry per line"))
            .collect()
    }
}

/// Every entry once, in order, none missing: exactly the server's log.
fn assert_whole_log(printed: &[Value], log: &[Value]) {
    let seqs: Vec<u64> = printed.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=log.len() as u64).collect();
    assert_eq!(seqs, expected, "no duplicate, no gap");
    assert_eq!(printed, log);
}

async fn post_lines(app: &TestApp, run: &str, from: usize) {
    let text: String = (from..from + 5)
        .map(|i| format!("client line {i}\n"))
        .collect();
    assert_eq!(app.post_log_lines(run, &text).await.status(), 201);
}

#[tokio::test]
async fn logs_follow_resumes_after_cut_connections_without_a_duplicate_or_a_gap() {
    let app = spawn_app().await;
    app.create_workflow(&gated()).await;
    let run = app.start_run("gated", json!({})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    post_lines(&app, &run, 1).await;
    let backlog = app.logs(&run).await.len();
    // The first two connections are cut inside the replay of the backlog.
    let proxy = CuttingProxy::start(&app.address, 2, 450).await;
    let follower = Follower::start(&proxy.address, &run);
    follower.wait_for_lines(backlog).await;
    post_lines(&app, &run, 6).await;
    follower.wait_for_lines(backlog + 5).await;
    // A live stream is cut while idle; what is written meanwhile arrives on the next one.
    proxy.cut_all();
    post_lines(&app, &run, 11).await;
    app.approve(&run).await;
    let printed = follower.finish().await;
    assert_whole_log(&printed, &app.logs(&run).await);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 3);
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn logs_follow_ends_when_a_resume_finds_the_run_over_and_nothing_left() {
    let app = spawn_app().await;
    app.create_workflow(&gated()).await;
    let run = app.start_run("gated", json!({})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    let proxy = CuttingProxy::cutting_before_end(&app.address).await;
    let follower = Follower::start(&proxy.address, &run);
    follower.wait_for_lines(3).await;
    app.approve(&run).await;
    let printed = follower.finish().await;
    assert_whole_log(&printed, &app.logs(&run).await);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the end was cut off");
    assert_eq!(
        proxy.connections.load(Ordering::SeqCst),
        3,
        "the stream, the resume that answered 204, and the read of the run's status"
    );
}

#[tokio::test]
async fn logs_follow_resumes_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::helpers::unused_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  host: 127.0.0.1\n  port: {port}\n  workers: 2\ndatabase:\n  path: {}\nengine:\n  poll_interval: 100ms\n",
            dir.path().join("orchestrator.db").display()
        ),
    )
    .unwrap();
    let server = ServerProcess::start(&config);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.address);
    let created = http
        .post(url("/v1/workflows"))
        .json(&gated())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let run: Value = http
        .post(url("/v1/runs"))
        .json(&json!({"workflow_id": "gated"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = run["id"].as_str().unwrap().to_owned();
    let status = |http: reqwest::Client, url: String| async move {
        let run: Value = http.get(url).send().await.ok()?.json().await.ok()?;
        (run["status"] == "WAITING_APPROVAL").then_some(())
    };
    wait_until("the run to wait", || {
        status(http.clone(), url(&format!("/v1/runs/{run}")))
    })
    .await;

    let follower = Follower::start(&server.address, &run);
    follower.wait_for_lines(3).await;
    let address = server.address.clone();
    assert_eq!(server.terminate().code(), Some(0));
    let server = ServerProcess::start(&config);
    assert_eq!(server.address, address);
    // Connections pooled to the stopped server are gone.
    let http = reqwest::Client::new();
    let approved = http
        .post(format!("{address}/v1/runs/{run}/approve"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let printed = follower.finish().await;
    let log: Value = http
        .get(format!("{address}/v1/runs/{run}/logs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_whole_log(&printed, log["items"].as_array().unwrap());
    assert!(
        printed.iter().any(|e| e["message"] == "run succeeded"),
        "{printed:?}"
    );
}
