//! The test harness: start the real server (in-process through `App::build`, or as the real
//! binary for restart and kill tests) on a free port with a fresh store, and speak HTTP to it.
#![allow(dead_code)] // each test module uses a different part of the harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};

use orchestrator::app::App;
use orchestrator::config::{Config, RawConfig};
use orchestrator::store::DynStore;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

/// A generous bound for waits that poll for a state.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A server running inside the test process.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub store: DynStore,
    pub engine: orchestrator::engine::Engine,
    pub hooks: orchestrator::hooks::Hooks,
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A raw configuration for tests: port 0, a fresh SQLite file, quick polling.
pub fn test_config(dir: &Path) -> RawConfig {
    let mut raw = RawConfig::default();
    raw.server.port = 0;
    raw.server.workers = 2;
    raw.database.path = dir.join("orchestrator.db");
    raw.engine.poll_interval = Duration::from_millis(100);
    raw.log.level = "warn".into();
    raw
}

/// Starts a server with the test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server with the test configuration changed by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut RawConfig)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    spawn_app_in(dir, adjust).await
}

/// Starts a server whose store lives in `dir` (reused across restarts).
pub async fn spawn_app_in(dir: TempDir, adjust: impl FnOnce(&mut RawConfig)) -> TestApp {
    let mut raw = test_config(dir.path());
    adjust(&mut raw);
    let config = Config::from_raw(Path::new("test"), raw).expect("valid test config");
    // A server stopped in this process releases its store file once its worker threads
    // have wound down; wait for that rather than fail.
    let app = wait_until("the store file to be released", || async {
        match App::build(config.clone()).await {
            Ok(app) => Some(app),
            Err(e) if e.to_string().contains("in use by another") => None,
            Err(e) => panic!("server does not start: {e}"),
        }
    })
    .await;
    let address = format!("http://{}", app.address());
    let store = app.store();
    let engine = app.engine();
    let hooks = app.hooks();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        store,
        engine,
        hooks,
        dir,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    /// A client that sends `Authorization: Bearer <token>` with every request.
    pub fn client_with_token(token: &str) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        headers.insert(reqwest::header::AUTHORIZATION, value);
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client")
    }

    /// Stops the server gracefully and hands back its store directory.
    pub async fn stop(mut self) -> TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn put(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a workflow and returns its id; panics unless the answer is 201.
    pub async fn create_workflow(&self, definition: &Value) -> String {
        let response = self.post("/v1/workflows", definition).await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Starts a run and returns its id; panics unless the answer is 201.
    pub async fn start_run(&self, workflow_id: &str, context: Value) -> String {
        let response = self
            .post(
                "/v1/runs",
                &json!({"workflow_id": workflow_id, "context": context}),
            )
            .await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    pub async fn run(&self, id: &str) -> Value {
        let response = self.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    /// Polls the run until `done` holds for it, for at most [`PATIENCE`].
    pub async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, || async {
            Some(self.run(id).await).filter(|r| done(r))
        })
        .await
    }

    /// Polls until the run has `status`.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        self.wait_for(id, &format!("run {id} to be {status}"), |r| {
            r["status"] == status
        })
        .await
    }

    /// Polls until the run is terminal.
    pub async fn wait_until_finished(&self, id: &str) -> Value {
        self.wait_for(id, &format!("run {id} to finish"), |r| {
            matches!(
                r["status"].as_str(),
                Some("SUCCEEDED" | "FAILED" | "CANCELED")
            )
        })
        .await
    }
}

/// A local port nothing listens on now (the OS picked it free), for a service that is
/// down at first and started on that port later.
pub fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// Binds `port` again once the OS lets go of it, for a server started there late.
pub async fn bind_port(port: u16) -> std::net::TcpListener {
    wait_until(&format!("port {port} to be free"), || async {
        std::net::TcpListener::bind(("127.0.0.1", port)).ok()
    })
    .await
}

/// A server-sent event as a client sees it.
pub type SseEvent = Event;

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// An open `GET /v1/runs/{id}/logs/stream`, parsed by a maintained SSE parser.
pub struct LogStream {
    events: Events,
}

impl LogStream {
    /// Parses the events of a `200 text/event-stream` answer.
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            events: Box::pin(response.bytes_stream().eventsource()),
        }
    }

    /// The next event, or `None` once the server closed the stream.
    pub async fn next(&mut self) -> Option<Event> {
        let next = tokio::time::timeout(PATIENCE, self.events.next())
            .await
            .expect("an event (or the end of the stream) within the patience bound");
        next.map(|e| e.expect("a well-formed event stream"))
    }

    /// Events up to and including the first that `stop` accepts.
    pub async fn until(&mut self, stop: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await.expect("the stream stays open");
            let done = stop(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    /// Events up to and including `end`; asserts the server closes the stream after it.
    pub async fn until_end(&mut self) -> Vec<Event> {
        let seen = self.until(|e| e.event == "end").await;
        assert!(self.next().await.is_none(), "the stream closes after end");
        seen
    }
}

/// The entries of `log` events, in order.
pub fn log_entries(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| {
            let entry: Value = serde_json::from_str(&e.data).expect("log data is JSON");
            assert_eq!(e.id, entry["seq"].to_string(), "the event id is the seq");
            entry
        })
        .collect()
}

impl TestApp {
    /// `GET …/logs/stream`, with `Last-Event-ID` when given, as a raw answer.
    pub async fn log_stream_response(
        &self,
        run: &str,
        last_event_id: Option<u64>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .get(self.url(&format!("/v1/runs/{run}/logs/stream")))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        request.send().await.expect("request sent")
    }

    /// Opens the log stream of a run; panics unless it starts.
    pub async fn log_stream(&self, run: &str, last_event_id: Option<u64>) -> LogStream {
        LogStream::new(self.log_stream_response(run, last_event_id).await)
    }

    /// `POST …/logs` with a text body.
    pub async fn post_log_lines(&self, run: &str, text: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/runs/{run}/logs")))
            .header("content-type", "text/plain")
            .body(text.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    /// The whole log of a run, paging through `GET …/logs`.
    pub async fn logs(&self, run: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut after = 0;
        loop {
            let response = self
                .get(&format!("/v1/runs/{run}/logs?after={after}&limit=100"))
                .await;
            assert_eq!(response.status(), 200);
            let page: Value = response.json().await.expect("json");
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_after"].as_u64() {
                Some(next) => after = next,
                None => return items,
            }
        }
    }

    /// Approves the step a run waits for; panics unless the answer is 200.
    pub async fn approve(&self, run: &str) -> Value {
        let response = self
            .post(&format!("/v1/runs/{run}/approve"), &json!({}))
            .await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Polls `probe` every 20 ms until it yields a value, for at most [`PATIENCE`].
pub async fn wait_until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server as a separate process (the real binary), for kill and restart tests.
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
    pub config: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the binary with the YAML `config` file and waits until it listens.
    pub fn start(config: &Path) -> Self {
        Self::start_with_flag(config, "-config")
    }

    /// Like [`ServerProcess::start`], naming the file with `flag` (`-config` or `--config`).
    pub fn start_with_flag(config: &Path, flag: &str) -> Self {
        Self::start_with_env(config, flag, &[])
    }

    /// Like [`ServerProcess::start_with_flag`], with extra environment variables.
    pub fn start_with_env(config: &Path, flag: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        command.arg(flag).arg(config).envs(env.iter().copied());
        Self::spawn(command, config)
    }

    /// Starts `command`, which runs the binary (directly or through `exec`) with the
    /// YAML `config` file, and waits until it listens.
    pub fn spawn(mut command: Command, config: &Path) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent && let Some(rest) = line.split("address=").nth(1) {
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = tx.send(addr);
                    sent = true;
                }
                seen.lock().unwrap().push(line);
            }
        });
        let address = rx
            .recv_timeout(PATIENCE)
            .expect("server reports its address");
        Self {
            child,
            address: format!("http://{address}"),
            config: config.to_owned(),
            lines,
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM delivered");
    }

    /// Waits up to `within` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("process status") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the server's log (stderr) until a line contains `text`; returns that line.
    pub async fn wait_for_line(&self, text: &str) -> String {
        wait_until(&format!("a server log line with {text:?}"), || async {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(text))
                .cloned()
        })
        .await
    }

    /// Every line the server logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("exit status")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a YAML config for a server process: free port, store in `dir`.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("config.yaml");
    let text = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  workers: 2\ndatabase:\n  path: {}\nengine:\n  poll_interval: 100ms\n{extra}",
        dir.join("orchestrator.db").display()
    );
    std::fs::write(&path, text).expect("config written");
    path
}

/// A request as a [`Target`] saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Default)]
struct TargetCounts {
    accepted: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: Mutex<Vec<SeenRequest>>,
    redirect_to: Mutex<Option<String>>,
}

/// A bare HTTP/1.1 server on 127.0.0.1 (a port from the OS) for tests that must see
/// connections, not only requests: it counts every accepted TCP connection, tracks requests
/// in flight, and can hold its answers until the test releases them. Every request gets
/// `200 {"ok": true}` on its own connection (`Connection: close`), except `/redirect`,
/// which answers `302` to the location set with [`Target::redirect_to`].
pub struct Target {
    pub address: SocketAddr,
    counts: Arc<TargetCounts>,
    gate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Target {
    /// Starts a target that answers at once.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let counts = Arc::new(TargetCounts::default());
        let (gate, open) = watch::channel(true);
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_one(socket, shared.clone(), open.clone()));
            }
        });
        Self {
            address,
            counts,
            gate,
            task,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Holds every answer (those waiting and those to come) until [`Target::release`].
    pub fn hold(&self) {
        self.gate.send_replace(false);
    }

    /// Answers every held request and answers at once from now on.
    pub fn release(&self) {
        self.gate.send_replace(true);
    }

    /// Where `/redirect` sends clients.
    pub fn redirect_to(&self, location: &str) {
        *self.counts.redirect_to.lock().unwrap() = Some(location.to_owned());
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Requests received and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.counts.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests that were ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.counts.max_in_flight.load(Ordering::SeqCst)
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.counts.requests.lock().unwrap().clone()
    }

    /// Polls until `n` requests are in flight.
    pub async fn wait_in_flight(&self, n: usize) {
        wait_until(&format!("{n} requests in flight at the target"), || async {
            (self.in_flight() == n).then_some(())
        })
        .await
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    mut socket: tokio::net::TcpStream,
    counts: Arc<TargetCounts>,
    mut open: watch::Receiver<bool>,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    counts.requests.lock().unwrap().push(SeenRequest {
        method,
        path: path.clone(),
        idempotency_key: header("idempotency-key"),
    });
    let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    counts.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _ = open.wait_for(|open| *open).await;
    let redirect = counts.redirect_to.lock().unwrap().clone();
    let answer = match redirect {
        Some(location) if path.starts_with("/redirect") => format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ),
        _ => "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}".to_owned(),
    };
    let _ = socket.write_all(answer.as_bytes()).await;
    let _ = socket.shutdown().await;
    counts.in_flight.fetch_sub(1, Ordering::SeqCst);
}
