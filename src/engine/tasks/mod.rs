//! Task queues (DESIGN §8): the worker side of `task` steps.
//!
//! A `task` step parks its run with a task written in the same commit (see
//! `state::tasks`); the run then holds no engine task, like an approval. From there the
//! task row moves on its own: [`Engine::poll_tasks`] claims tasks for a worker (waiting,
//! without spinning, until one arrives: [`signals`]), heartbeats extend a claim's lease,
//! and `complete`/`fail` end it. Each of those is one guarded store update, so exactly one
//! end counts. The ended claim is then applied to its run through [`Engine::decide`]-like
//! delivery ([`apply`]): the step succeeds, fails, or its task goes back on the queue for
//! the next attempt. The [`sweep`] loop ends claims whose lease ran out and applies ended
//! claims that a crash kept from their run.

mod apply;
pub mod signals;
pub(super) mod sweep;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Engine, EngineError};
use crate::metrics::Metrics;
use crate::model::{Timestamp, now};
use crate::problems::Violation;
use crate::size::json_len;
use crate::store::Transition;
use crate::store::tasks::{
    ClaimedTask, Heartbeat, QueueStats, TaskClaim, TaskEnd, TaskKey, TaskOp, TaskRecord,
    TaskStatus, WorkerSeen,
};

pub use signals::QueueSignals;

/// Most tasks one poll may claim.
pub const MAX_POLL_TASKS: usize = 100;
/// Longest a poll may wait for a task.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(30);
/// Largest `progress` a heartbeat may carry, in bytes of compact JSON.
pub const MAX_PROGRESS_BYTES: usize = 16 * 1024;
/// Longest `error` a worker may report, in bytes.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;
/// Workers are listed when seen this recently.
pub const WORKERS_SEEN_WITHIN: Duration = Duration::from_secs(300);

/// What the task side of the engine shares: parked polls, the sweeper's wake-up, and the
/// workers seen recently.
#[derive(Default)]
pub(crate) struct Queues {
    pub signals: Arc<QueueSignals>,
    /// Woken when this server hands out a claim whose lease ends before the sweeper's next
    /// pass ([`Self::next_sweep`]).
    pub claimed: Notify,
    /// When the sweeper looks next, in Unix milliseconds.
    pub next_sweep: AtomicI64,
    pub seen: workers::Seen,
}

/// What a run's commit did to task queues: the queues it put tasks on, and the queues of
/// the tasks it canceled.
pub(crate) struct Filled {
    put: Vec<String>,
    canceled: Vec<String>,
}

/// The task changes of `tx`, to announce once it is committed.
pub(crate) fn filled_queues(tx: &Transition) -> Filled {
    let mut filled = Filled {
        put: Vec::new(),
        canceled: Vec::new(),
    };
    for op in &tx.tasks {
        match op {
            TaskOp::Cancel { queue, .. } => filled.canceled.push(queue.clone()),
            other => filled.put.extend(other.fills().map(str::to_owned)),
        }
    }
    filled
}

impl Queues {
    /// A commit with the task changes `filled` went through: parked polls of the queues
    /// it put tasks on are woken, and canceled tasks counted.
    pub fn filled(&self, filled: &Filled, metrics: &Metrics) {
        for queue in &filled.put {
            self.signals.wake(queue);
        }
        for queue in &filled.canceled {
            metrics.task_ended(queue, "canceled");
        }
    }
}

/// A worker's poll.
#[derive(Debug, Clone)]
pub struct Poll {
    pub queues: Vec<String>,
    pub worker: String,
    /// At most this many tasks (1..=[`MAX_POLL_TASKS`]).
    pub max: usize,
    /// Wait up to this long for a task (at most [`MAX_POLL_WAIT`]).
    pub wait: Duration,
}

/// A task handed to a worker, with the token of its claim (shown once, never stored).
#[derive(Debug, Clone)]
pub struct Handed {
    pub task: ClaimedTask,
    pub token: String,
}

/// A fresh claim token and its digest.
fn new_token() -> (String, [u8; 32]) {
    let token = hex::encode(rand::random::<[u8; 32]>());
    let digest = digest(&token);
    (token, digest)
}

/// The digest a token is kept and compared as.
fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn key(id: &str, token: &str) -> TaskKey {
    TaskKey {
        id: id.to_owned(),
        token: digest(token),
        now: now(),
    }
}

fn invalid(pointer: &str, message: String) -> EngineError {
    EngineError::Invalid {
        violations: vec![Violation::new(pointer, message.clone())],
        message,
    }
}

impl Engine {
    /// Claims up to `poll.max` tasks of `poll.queues` for `poll.worker`, waiting up to
    /// `poll.wait` for the first one; an empty answer after the wait, or at once when the
    /// server starts to stop.
    pub async fn poll_tasks(&self, poll: Poll) -> Result<Vec<Handed>, EngineError> {
        let shared = &self.shared;
        let queues = &shared.queues;
        queues
            .seen
            .record(&shared.store, &poll.worker, &poll.queues)
            .await;
        // Registered before the first claim: a task put on a queue after it is not missed.
        let parked = queues.signals.register(&poll.queues);
        let deadline = Instant::now() + poll.wait.min(MAX_POLL_WAIT);
        let max = poll.max.clamp(1, MAX_POLL_TASKS);
        loop {
            let tokens: Vec<(String, [u8; 32])> = (0..max).map(|_| new_token()).collect();
            let claimed = shared
                .store
                .claim_tasks(TaskClaim {
                    queues: poll.queues.clone(),
                    worker: poll.worker.clone(),
                    now: now(),
                    tokens: tokens.iter().map(|(_, d)| *d).collect(),
                })
                .await?;
            if !claimed.is_empty() {
                let first_end = claimed
                    .iter()
                    .map(|t| t.lease_expires_at.timestamp_millis())
                    .min();
                if first_end.is_some_and(|end| end < queues.next_sweep.load(Ordering::Relaxed)) {
                    queues.claimed.notify_one();
                }
                if claimed.len() >= max {
                    parked.leaves_full();
                }
                return Ok(self.hand_out(claimed, tokens));
            }
            if Instant::now() >= deadline || shared.shutdown.is_cancelled() {
                return Ok(Vec::new());
            }
            let until = match shared.store.task_times(&poll.queues).await?.next_available {
                Some(at) => deadline.min(instant_of(at)),
                None => deadline,
            };
            tokio::select! {
                _ = parked.notified() => {}
                _ = tokio::time::sleep_until(until.max(Instant::now() + RECHECK)) => {}
                _ = shared.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    fn hand_out(&self, claimed: Vec<ClaimedTask>, tokens: Vec<(String, [u8; 32])>) -> Vec<Handed> {
        let at = now();
        claimed
            .into_iter()
            .filter_map(|task| {
                let token = tokens.iter().find(|(_, d)| *d == task.token)?.0.clone();
                let waited = (at - task.available_at).to_std().unwrap_or_default();
                self.shared.metrics.task_claimed(waited);
                Some(Handed { task, token })
            })
            .collect()
    }

    /// Extends the lease of a live claim; `cancel` once its run no longer wants the result.
    pub async fn heartbeat_task(
        &self,
        id: &str,
        token: &str,
        progress: Option<Value>,
    ) -> Result<Heartbeat, EngineError> {
        if let Some(p) = &progress {
            let size = json_len(p);
            if size > MAX_PROGRESS_BYTES {
                return Err(invalid(
                    "/progress",
                    format!("progress is {size} bytes, over the limit of {MAX_PROGRESS_BYTES}"),
                ));
            }
        }
        Ok(self
            .shared
            .store
            .heartbeat_task(key(id, token), progress)
            .await?)
    }

    /// Ends a live claim with the step's output; the step succeeds.
    pub async fn complete_task(
        &self,
        id: &str,
        token: &str,
        output: Value,
    ) -> Result<TaskRecord, EngineError> {
        let max = self.shared.settings.limits.max_output_bytes;
        let size = json_len(&output);
        if size > max {
            return Err(invalid(
                "/output",
                format!("the output is {size} bytes, over limits.max_output_bytes ({max})"),
            ));
        }
        self.end_task(id, token, TaskEnd::Completed { output })
            .await
    }

    /// Ends a live claim as failed; the step's `retry` decides what follows (nothing when
    /// not `retryable`).
    pub async fn fail_task(
        &self,
        id: &str,
        token: &str,
        error: String,
        retryable: bool,
    ) -> Result<TaskRecord, EngineError> {
        if error.len() > MAX_ERROR_BYTES {
            return Err(invalid(
                "/error",
                format!(
                    "the error is {} bytes, over the limit of {MAX_ERROR_BYTES}",
                    error.len()
                ),
            ));
        }
        self.end_task(id, token, TaskEnd::Failed { error, retryable })
            .await
    }

    async fn end_task(
        &self,
        id: &str,
        token: &str,
        end: TaskEnd,
    ) -> Result<TaskRecord, EngineError> {
        let record = self.shared.store.end_task(key(id, token), end).await?;
        count_end(&self.shared.metrics, &record);
        // The end is committed: from here a failure to apply it is retried by the sweeper.
        apply::apply(&self.shared, record.clone()).await;
        Ok(record)
    }

    /// Every queue in use: tasks waiting and in flight, and the workers polling it.
    pub async fn list_queues(&self) -> Result<Vec<QueueStats>, EngineError> {
        Ok(self.shared.store.list_queues(workers_since()).await?)
    }

    /// Workers seen in the last five minutes.
    pub async fn list_workers(&self) -> Result<Vec<WorkerSeen>, EngineError> {
        Ok(self.shared.store.list_workers(workers_since()).await?)
    }

    /// Polls parked on this server now.
    pub fn parked_polls(&self) -> usize {
        self.shared.queues.signals.parked()
    }
}

/// Counts an ended claim in `orchestrator_tasks_total`.
pub(crate) fn count_end(metrics: &Metrics, task: &TaskRecord) {
    let outcome = match task.status {
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Expired => "expired",
        TaskStatus::Canceled => "canceled",
        TaskStatus::Waiting | TaskStatus::Claimed => return,
    };
    metrics.task_ended(&task.queue, outcome);
}

/// A poll whose claim found nothing although a task was due waits at least this long
/// before it claims again (the task was locked by a claim in flight elsewhere).
const RECHECK: Duration = Duration::from_millis(5);

fn workers_since() -> Timestamp {
    now() - chrono::Duration::from_std(WORKERS_SEEN_WITHIN).unwrap_or_default()
}

/// The instant of this process's clock at wall time `at` (now when it has passed).
fn instant_of(at: Timestamp) -> Instant {
    Instant::now() + (at - now()).to_std().unwrap_or_default()
}
