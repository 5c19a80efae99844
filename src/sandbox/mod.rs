//! The template sandbox: heavy templates (see `crate::expr::weight`) are evaluated in a
//! separate process, this same binary run as `orchestrator sandbox`, whose address space
//! is capped by the operating system (`limits.template_memory_bytes`) and which is killed
//! when it takes longer than `limits.template_time`, when the step is canceled, or when
//! the server stops. A template that would exhaust memory or spin forever costs one child
//! process, never the server.
//!
//! Children are kept and reused (at most [`SandboxSettings::processes`] at once); one
//! that failed, timed out or was abandoned is killed and replaced. The protocol is one
//! JSON request per line on the child's stdin and one JSON answer per line on its stdout.

pub mod child;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use crate::expr::{Budget, Part};

/// How the sandbox runs.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// The `orchestrator` binary to run as the sandbox; `None`: this executable.
    pub command: Option<PathBuf>,
    /// Instructions and result size of each evaluation.
    pub budget: Budget,
    /// The address space a child may use.
    pub memory_bytes: u64,
    /// The longest one request may take.
    pub time: Duration,
    /// Children at most (requests beyond wait).
    pub processes: usize,
}

/// Why a sandboxed evaluation failed; the message says which budget, or what broke.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SandboxError {
    /// The template itself failed (an undefined value, a budget of the template machine).
    #[error("{message} in {source_text:?}")]
    Template {
        source_text: String,
        message: String,
    },
    #[error("the template took longer than limits.template_time ({} ms)", .0.as_millis())]
    TooSlow(Duration),
    #[error(
        "the sandbox process died while rendering the template: it most likely needed more \
         than limits.template_memory_bytes ({0} bytes)"
    )]
    Died(u64),
    #[error("the template sandbox cannot be started ({command}): {reason}")]
    Unavailable { command: String, reason: String },
}

/// One request to a child.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub parts: Vec<Part>,
    /// `context`, `steps` and `run` as the parts read them.
    pub scope: Map<String, Value>,
}

/// A child's answer: every part's value, or the first part that failed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Values(Vec<Value>),
    Failed { index: usize, message: String },
}

/// A running child and its pipes.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The pool of sandbox children; cheap to share behind an `Arc`.
pub struct Sandbox {
    settings: SandboxSettings,
    idle: Mutex<Vec<Worker>>,
    slots: Semaphore,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    pub fn new(settings: SandboxSettings) -> Self {
        Self {
            slots: Semaphore::new(settings.processes.max(1)),
            settings,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Evaluates `parts` against `scope` in a child; their values in order.
    pub async fn evaluate(
        &self,
        parts: Vec<Part>,
        scope: Map<String, Value>,
    ) -> Result<Vec<Value>, SandboxError> {
        let request = Request { parts, scope };
        let mut line = serde_json::to_vec(&request).map_err(|e| self.unavailable(e))?;
        line.push(b'\n');
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| self.unavailable(e))?;
        let mut worker = match self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            Some(worker) => worker,
            None => self.spawn()?,
        };
        let limit = self.settings.time;
        // Dropping the worker (a timeout, or the caller giving up) kills the child.
        let answer = tokio::time::timeout(limit, exchange(&mut worker, &line, self.read_limit()))
            .await
            .map_err(|_| SandboxError::TooSlow(limit))?
            .map_err(|_| SandboxError::Died(self.settings.memory_bytes))?;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(worker);
        }
        match answer {
            Answer::Values(values) => Ok(values),
            Answer::Failed { index, message } => Err(SandboxError::Template {
                source_text: request
                    .parts
                    .get(index)
                    .map(|p| p.source().to_owned())
                    .unwrap_or_default(),
                message,
            }),
        }
    }

    /// Starts a child now, to find out at start-up whether the sandbox works.
    pub async fn check(&self) -> Result<(), SandboxError> {
        let values = self
            .evaluate(vec![Part::Expr("1 + 1".into())], Map::new())
            .await?;
        match values.as_slice() {
            [v] if v == &Value::from(2) => Ok(()),
            other => Err(self.unavailable(format!("unexpected answer {other:?}"))),
        }
    }

    /// The longest answer a child may send: every part at its largest, and some.
    fn read_limit(&self) -> u64 {
        (self.settings.budget.max_bytes as u64).saturating_mul(8) + 64 * 1024
    }

    /// The binary to run: the configured one, else this executable when it is
    /// `orchestrator`, else an `orchestrator` beside it or one directory up (where cargo
    /// puts it for the test and bench binaries that embed the server).
    fn command(&self) -> Result<PathBuf, SandboxError> {
        if let Some(path) = &self.settings.command {
            return Ok(path.clone());
        }
        let exe = std::env::current_exe().map_err(|e| self.unavailable(e))?;
        let name = format!("orchestrator{}", std::env::consts::EXE_SUFFIX);
        if exe.file_name().is_some_and(|n| n == name.as_str()) {
            return Ok(exe);
        }
        exe.ancestors()
            .skip(1)
            .take(2)
            .map(|dir| dir.join(&name))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| self.unavailable(format!("no {name} binary beside {}", exe.display())))
    }

    fn spawn(&self) -> Result<Worker, SandboxError> {
        let command = self.command()?;
        let settings = &self.settings;
        let mut child = Command::new(&command)
            .arg("sandbox")
            .arg("--fuel")
            .arg(settings.budget.fuel.to_string())
            .arg("--max-bytes")
            .arg(settings.budget.max_bytes.to_string())
            .arg("--memory-bytes")
            .arg(settings.memory_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.unavailable(e))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(self.unavailable("the child has no pipes"));
        };
        Ok(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> SandboxError {
        let command = match &self.settings.command {
            Some(path) => format!("engine.sandbox_command {}", path.display()),
            None => "this executable".to_owned(),
        };
        SandboxError::Unavailable {
            command,
            reason: reason.to_string(),
        }
    }
}

/// Sends one request line and reads one answer line (at most `limit` bytes).
async fn exchange(worker: &mut Worker, line: &[u8], limit: u64) -> std::io::Result<Answer> {
    worker.stdin.write_all(line).await?;
    worker.stdin.flush().await?;
    let mut answer = Vec::new();
    let read = (&mut worker.stdout)
        .take(limit)
        .read_until(b'\n', &mut answer)
        .await?;
    if read == 0 || answer.last() != Some(&b'\n') {
        let _ = worker.child.start_kill();
        return Err(std::io::Error::other(
            "the child ended or answered too much",
        ));
    }
    serde_json::from_slice(&answer).map_err(std::io::Error::other)
}
