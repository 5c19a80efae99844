//! One task run by `orchestrator worker`: the command in its own process group with the
//! payload as JSON on its stdin, heartbeats while it runs, and the claim ended by how it
//! exited (exit 0: completed with stdout, parsed as JSON or else kept as text; otherwise
//! failed with the tail of stderr).
//!
//! The whole process group is killed (SIGKILL) when the run is canceled (a heartbeat says
//! `cancel`), when the claim is lost (`409`), and when the task's `timeout_ms` passes, so
//! no grandchild of the command outlives its task.

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::http::{Api, ClientError};

/// How much of stderr is kept for the error of a failed task.
const STDERR_TAIL: usize = 4096;
/// Standard output beyond this fails the task (the server's output limit is lower).
const MAX_STDOUT: usize = 64 * 1024 * 1024;
/// The shortest time between heartbeats.
const MIN_BEAT: Duration = Duration::from_millis(100);

/// A task as a poll handed it out (the fields the worker uses).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub token: String,
    pub run_id: String,
    pub step: String,
    pub queue: String,
    pub attempt: u64,
    pub payload: Value,
    pub heartbeat_ms: u64,
    pub timeout_ms: Option<u64>,
}

impl Claimed {
    /// Reads a task of a poll's answer.
    pub fn from_json(item: &Value) -> Option<Self> {
        Some(Self {
            id: item["id"].as_str()?.to_owned(),
            token: item["token"].as_str()?.to_owned(),
            run_id: item["run_id"].as_str().unwrap_or_default().to_owned(),
            step: item["step"].as_str().unwrap_or_default().to_owned(),
            queue: item["queue"].as_str().unwrap_or_default().to_owned(),
            attempt: item["attempt"].as_u64().unwrap_or(1),
            payload: item.get("payload").cloned().unwrap_or(Value::Null),
            heartbeat_ms: item["heartbeat_ms"].as_u64().unwrap_or(30_000),
            timeout_ms: item["timeout_ms"].as_u64(),
        })
    }
}

/// How a task's command ended, or why it was stopped.
#[derive(Debug)]
enum Ended {
    Exited {
        code: Option<i32>,
        stdout: Vec<u8>,
        stderr: String,
    },
    /// Killed: the run was canceled or the claim is gone; nothing is reported.
    Abandoned(&'static str),
    /// Killed after `timeout_ms`.
    TimedOut(u64),
    /// The command could not run at all.
    Broken(String),
}

/// Runs `task` with `command` (a shell command line) and ends its claim; returns what
/// happened, in a few words.
pub async fn run(api: &Api, command: &str, task: &Claimed) -> String {
    let ended = execute(api, command, task).await;
    let (path, body, summary) = match ended {
        Ended::Exited {
            code: Some(0),
            stdout,
            ..
        } => (
            "complete",
            json!({"token": task.token, "output": output_of(&stdout)}),
            "completed".to_owned(),
        ),
        Ended::Exited { code, stderr, .. } => {
            let status = code.map_or_else(
                || "killed by a signal".to_owned(),
                |c| format!("exit status {c}"),
            );
            let error = if stderr.trim().is_empty() {
                format!("the command failed ({status})")
            } else {
                format!("the command failed ({status}): {}", stderr.trim_end())
            };
            (
                "fail",
                json!({"token": task.token, "error": error}),
                format!("failed ({status})"),
            )
        }
        Ended::TimedOut(ms) => (
            "fail",
            json!({"token": task.token, "error": format!("timed out: the command ran past timeout_ms {ms} and was killed")}),
            "timed out".to_owned(),
        ),
        Ended::Broken(why) => (
            "fail",
            json!({"token": task.token, "error": why}),
            "could not start the command".to_owned(),
        ),
        Ended::Abandoned(why) => return why.to_owned(),
    };
    match report(api, task, path, &body).await {
        Ok(()) => summary,
        Err(ClientError::Refused(p)) if p.status == 400 && path == "complete" => {
            // The output was refused (too large): the task fails, and retrying cannot help.
            let error = format!("the server refused the output: {}", p.detail);
            let body = json!({"token": task.token, "error": error, "retryable": false});
            match report(api, task, "fail", &body).await {
                Ok(()) => "failed (output refused)".to_owned(),
                Err(e) => format!("could not report: {e}"),
            }
        }
        Err(e) => format!("could not report: {e}"),
    }
}

/// A command's stdout as the step's output: JSON when it parses, else the text.
pub fn output_of(stdout: &[u8]) -> Value {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(stdout).unwrap_or_else(|_| {
        Value::String(
            String::from_utf8_lossy(stdout)
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        )
    })
}

/// Sends `complete` or `fail`, trying again while the server is away (the lease still
/// holds the claim meanwhile).
async fn report(api: &Api, task: &Claimed, path: &str, body: &Value) -> Result<(), ClientError> {
    let mut delay = Duration::from_millis(200);
    loop {
        match api
            .send(Method::POST, &["v1", "tasks", &task.id, path], body)
            .await
        {
            Err(e) if e.is_transient() => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other.map(|_| ()),
        }
    }
}

async fn execute(api: &Api, command: &str, task: &Claimed) -> Ended {
    let mut child = match spawn(command, task) {
        Ok(child) => child,
        Err(e) => return Ended::Broken(format!("cannot start the command: {e}")),
    };
    // Kills the group however this ends, a worker killed while draining included.
    let guard = Group(child.id());
    let ended = supervise(api, &mut child, task).await;
    if !matches!(ended, Ended::Exited { .. }) {
        drop(guard);
        let _ = child.wait().await;
    }
    ended
}

/// A process group, killed when dropped.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn spawn(command: &str, task: &Claimed) -> std::io::Result<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("ORCHESTRATOR_TASK_ID", &task.id)
        .env("ORCHESTRATOR_RUN_ID", &task.run_id)
        .env("ORCHESTRATOR_STEP", &task.step)
        .env("ORCHESTRATOR_QUEUE", &task.queue)
        .env("ORCHESTRATOR_ATTEMPT", task.attempt.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Feeds the payload, collects the output, and heartbeats until the command exits or
/// must be stopped.
async fn supervise(api: &Api, child: &mut Child, task: &Claimed) -> Ended {
    let group = child.id();
    let payload = serde_json::to_vec(&task.payload).unwrap_or_default();
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input must not block the worker.
        tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
            let _ = stdin.shutdown().await;
        });
    }
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Ended::Broken("the command's output could not be read".into());
    };
    let out = tokio::spawn(read_capped(stdout, MAX_STDOUT));
    let err = tokio::spawn(read_tail(stderr, STDERR_TAIL));
    let every = (Duration::from_millis(task.heartbeat_ms) / 3).max(MIN_BEAT);
    let deadline = task
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut beat = tokio::time::interval_at(Instant::now() + every, every);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = beat.tick() => {
                if let Some(why) = heartbeat(api, task).await {
                    return Ended::Abandoned(why);
                }
            }
            _ = sleep_until(deadline) => {
                return Ended::TimedOut(task.timeout_ms.unwrap_or_default());
            }
        }
    };
    // What the command left running in the background would hold its output open.
    kill_group(group);
    let status = match status {
        Ok(status) => status,
        Err(e) => return Ended::Broken(format!("waiting for the command failed: {e}")),
    };
    let stdout = match out.await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            return Ended::Exited {
                code: Some(1),
                stdout: Vec::new(),
                stderr: format!("standard output over {MAX_STDOUT} bytes"),
            };
        }
        Err(_) => Vec::new(),
    };
    let stderr = err.await.unwrap_or_default();
    Ended::Exited {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// One heartbeat; why the task must stop, if it must.
async fn heartbeat(api: &Api, task: &Claimed) -> Option<&'static str> {
    let body = json!({"token": task.token});
    match api
        .send(Method::POST, &["v1", "tasks", &task.id, "heartbeat"], &body)
        .await
    {
        Ok(answer) if answer["cancel"].as_bool() == Some(true) => {
            Some("canceled: the run no longer wants it; the command was killed")
        }
        Ok(_) => None,
        Err(ClientError::Refused(p)) if matches!(p.status, 404 | 409) => {
            Some("the claim is gone (its lease expired); the command was killed")
        }
        // The server is away or busy: keep working; the lease may still hold.
        Err(_) => None,
    }
}

/// Kills the command's process group (its pid is the group id).
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

/// Everything `reader` yields, or `None` past `cap` bytes.
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return Some(out),
            Ok(n) => {
                if out.len() + n > cap {
                    return None;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// The last `keep` bytes of what `reader` yields, as text.
async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > keep * 2 {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    String::from_utf8_lossy(&tail).into_owned()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_is_json_when_it_parses_and_text_otherwise() {
        assert_eq!(output_of(b"{\"a\": 1}\n"), json!({"a": 1}));
        assert_eq!(output_of(b"42"), json!(42));
        assert_eq!(output_of(b"hello world\n"), json!("hello world"));
        assert_eq!(output_of(b"  \n"), Value::Null);
    }

    #[tokio::test]
    async fn the_tail_of_stderr_is_kept() {
        let text = "x".repeat(10_000) + "the end";
        let tail = read_tail(text.as_bytes(), 100).await;
        assert_eq!(tail.len(), 100);
        assert!(tail.ends_with("the end"));
        assert!(read_capped(text.as_bytes(), 100).await.is_none());
    }
}
