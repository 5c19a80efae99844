//! What both stores keep for task queues (DESIGN §8): tasks handed to workers, their
//! claims and leases, and the workers seen polling.
//!
//! A task is written by the commit of the run whose step waits for it ([`TaskOp`] on
//! [`super::Transition`]), so a step and its task never disagree. From then on the task
//! row alone moves through claims: a claim sets a fresh token (its SHA-256 is kept) and a
//! lease; a heartbeat extends the lease; `complete`/`fail` end the claim, and the sweeper
//! ends claims whose lease ran out. Each of those is one guarded update, so exactly one
//! of them wins a claim. An ended claim stays *unsettled* until its run has applied it
//! (in the run's own commit, with [`TaskOp::Settle`] or [`TaskOp::Retry`]); whoever finds
//! an unsettled task applies it again, so a crash between the two loses nothing.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde_json::Value;

use super::StoreError;
use crate::model::Timestamp;

/// Where a task is. `WAITING` tasks are on their queue, a `CLAIMED` one is held by a
/// worker; `COMPLETED`, `FAILED` and `EXPIRED` end a claim (the run decides what next);
/// `CANCELED` tasks belong to a run that no longer waits for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Waiting,
    Claimed,
    Completed,
    Failed,
    Expired,
    Canceled,
}

impl TaskStatus {
    /// The upper-case stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "WAITING",
            Self::Claimed => "CLAIMED",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Expired => "EXPIRED",
            Self::Canceled => "CANCELED",
        }
    }

    /// True once a claim of this attempt has ended (whatever the run makes of it).
    pub fn is_ended(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Expired)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "WAITING" => Self::Waiting,
            "CLAIMED" => Self::Claimed,
            "COMPLETED" => Self::Completed,
            "FAILED" => Self::Failed,
            "EXPIRED" => Self::Expired,
            "CANCELED" => Self::Canceled,
            other => {
                return Err(StoreError::Corrupt {
                    what: format!("unknown task status {other:?}"),
                    cause: None,
                });
            }
        })
    }
}

/// A task to put on its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub id: String,
    pub queue: String,
    pub run_id: String,
    pub workflow_id: String,
    /// The step's name.
    pub step: String,
    /// The number of the attempt a claim makes (1 for a new task).
    pub attempt: u32,
    pub payload: Value,
    /// How long a claim lasts without a heartbeat.
    pub heartbeat_ms: u64,
    /// How long one attempt may take from its claim (`timeout_ms`).
    pub timeout_ms: Option<u64>,
    /// Claimable from this time on.
    pub available_at: Timestamp,
}

/// A change to a task, made in the commit of the run that owns it.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOp {
    /// Puts a new task on its queue.
    Enqueue(NewTask),
    /// The ended claim is applied, and the task goes back on its queue for attempt
    /// `attempt`, claimable from `available_at` (a retry's delay).
    Retry {
        id: String,
        queue: String,
        attempt: u32,
        available_at: Timestamp,
    },
    /// The ended claim is applied for good.
    Settle { id: String },
    /// The run no longer waits for the task: a waiting task leaves its queue; a claimed one
    /// keeps its token so that its next heartbeat answers `cancel`.
    Cancel { id: String, queue: String },
}

impl TaskOp {
    /// The queue this change puts a task on, if it does.
    pub fn fills(&self) -> Option<&str> {
        match self {
            Self::Enqueue(task) => Some(&task.queue),
            Self::Retry { queue, .. } => Some(queue),
            _ => None,
        }
    }
}

/// A worker's poll: claim up to `tokens.len()` tasks from `queues`, oldest first.
#[derive(Debug, Clone)]
pub struct TaskClaim {
    pub queues: Vec<String>,
    pub worker: String,
    pub now: Timestamp,
    /// The SHA-256 of each claim's token, one per task at most.
    pub tokens: Vec<[u8; 32]>,
}

/// A task handed to a worker by a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    pub id: String,
    pub queue: String,
    pub run_id: String,
    pub workflow_id: String,
    pub step: String,
    pub attempt: u32,
    pub payload: Value,
    pub heartbeat_ms: u64,
    pub timeout_ms: Option<u64>,
    /// The digest of the token this claim holds (which token of the request it got).
    pub token: [u8; 32],
    pub lease_expires_at: Timestamp,
    /// Since when it waited on its queue.
    pub available_at: Timestamp,
}

/// A worker's proof of its claim on a task.
#[derive(Debug, Clone)]
pub struct TaskKey {
    pub id: String,
    /// The SHA-256 of the token the claim handed out.
    pub token: [u8; 32],
    pub now: Timestamp,
}

/// How a worker ended its claim.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEnd {
    Completed { output: Value },
    Failed { error: String, retryable: bool },
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// The run no longer wants the result: stop working on it.
    pub cancel: bool,
    /// The lease's new end (unchanged when canceled).
    pub lease_expires_at: Option<Timestamp>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: String,
    pub queue: String,
    pub run_id: String,
    pub workflow_id: String,
    pub step: String,
    pub attempt: u32,
    pub status: TaskStatus,
    pub payload: Value,
    pub heartbeat_ms: u64,
    pub timeout_ms: Option<u64>,
    pub created_at: Timestamp,
    pub available_at: Timestamp,
    /// The worker of the current or last claim.
    pub worker: Option<String>,
    pub claimed_at: Option<Timestamp>,
    pub lease_expires_at: Option<Timestamp>,
    /// The last heartbeat's `progress`.
    pub progress: Option<Value>,
    pub ended_at: Option<Timestamp>,
    /// A completed claim's output, until its run has taken it.
    pub output: Option<Value>,
    /// Why a claim failed or expired.
    pub error: Option<String>,
    /// A failed claim may be retried (the worker's `retryable`).
    pub retryable: bool,
    /// The ended claim is applied to its run (always true for a task never ended).
    pub settled: bool,
}

/// One queue, as listed: tasks on it and in flight, and who polls it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    pub queue: String,
    pub waiting: u64,
    pub in_flight: u64,
    /// Since when the oldest claimable task waits.
    pub oldest_waiting_at: Option<Timestamp>,
    /// Workers seen polling it (names, sorted).
    pub workers: Vec<String>,
}

impl QueueStats {
    /// A queue with nothing on it and nobody polling it.
    pub fn empty(queue: &str) -> Self {
        Self {
            queue: queue.to_owned(),
            waiting: 0,
            in_flight: 0,
            oldest_waiting_at: None,
            workers: Vec::new(),
        }
    }
}

/// A worker seen polling.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSeen {
    pub name: String,
    pub queues: Vec<String>,
    pub last_seen: Timestamp,
    /// Tasks it holds claimed now.
    pub in_flight: u64,
}

/// When the task loops must look again: the earliest retry that becomes claimable on
/// some queues, and the earliest lease that runs out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskTimes {
    pub next_available: Option<Timestamp>,
    pub next_expiry: Option<Timestamp>,
}

/// The task queue operations of a store (a supertrait of [`super::Store`], so every store
/// has them and `dyn Store` reaches them).
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Claims up to `claim.tokens.len()` claimable tasks of `claim.queues`, oldest first,
    /// each with its own token; two concurrent claims never take the same task.
    async fn claim_tasks(&self, claim: TaskClaim) -> Result<Vec<ClaimedTask>, StoreError>;
    /// Extends a live claim's lease by its `heartbeat_ms` (never past its attempt's
    /// `timeout_ms`) and keeps `progress`; `cancel` when the task was canceled under the
    /// claim. `NotFound` for an unknown task, `Conflict` when the claim is not live.
    async fn heartbeat_task(
        &self,
        key: TaskKey,
        progress: Option<Value>,
    ) -> Result<Heartbeat, StoreError>;
    /// Ends a live claim as the worker says; the task is unsettled until its run applies
    /// it. `NotFound` for an unknown task, `Conflict` when the claim is not live.
    async fn end_task(&self, key: TaskKey, end: TaskEnd) -> Result<TaskRecord, StoreError>;
    /// Ends up to `limit` claims whose lease ran out by `now` (`EXPIRED`, unsettled).
    async fn expire_tasks(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError>;
    /// Unsettled tasks whose claim ended before `ended_before`, oldest first.
    async fn unsettled_tasks(
        &self,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError>;
    /// Marks ended claim `attempt` of a task as applied without its run (the run no longer
    /// waits for it); nothing when the task has moved on to another attempt.
    async fn settle_task(&self, id: &str, attempt: u32) -> Result<(), StoreError>;
    /// A stored task.
    async fn get_task(&self, id: &str) -> Result<TaskRecord, StoreError>;
    /// When a waiting task of `queues` next becomes claimable, and the next lease expiry.
    async fn task_times(&self, queues: &[String]) -> Result<TaskTimes, StoreError>;
    /// Every queue with tasks waiting or in flight, or polled by a worker seen since
    /// `workers_since`, by name.
    async fn list_queues(&self, workers_since: Timestamp) -> Result<Vec<QueueStats>, StoreError>;
    /// Records that worker `name` polled `queues` at `at`.
    async fn record_worker(
        &self,
        name: &str,
        queues: &[String],
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Workers seen since `since`, by name.
    async fn list_workers(&self, since: Timestamp) -> Result<Vec<WorkerSeen>, StoreError>;
    /// Forgets workers not seen since `before`; returns how many.
    async fn prune_workers(&self, before: Timestamp) -> Result<u64, StoreError>;
}

/// The columns a [`TaskRecord`] is read from, in its field order.
pub const TASK_COLUMNS: &str = "id, queue, run_id, workflow_id, step, attempt, status, \
     heartbeat_ms, timeout_ms, created_at, available_at, worker, claimed_at, lease_expires_at, \
     progress, ended_at, output, error, retryable, settled, token, payload";

/// Why a claim is not live, for the `409` a stale `heartbeat`, `complete` or `fail` gets.
pub fn stale_claim(
    id: &str,
    status: TaskStatus,
    token_matches: bool,
    lease_expires_at: Option<Timestamp>,
    now: Timestamp,
) -> StoreError {
    let why = match (token_matches, status) {
        (false, _) => "the token is not the current claim's (the task was handed out again, \
                       or the token is wrong)"
            .to_owned(),
        (true, TaskStatus::Claimed) => format!(
            "the claim's lease expired at {}; the task goes back to its queue",
            lease_expires_at.unwrap_or(now).to_rfc3339()
        ),
        (true, TaskStatus::Canceled) => "the run no longer waits for it (canceled)".to_owned(),
        (true, TaskStatus::Expired) => {
            "the claim's lease expired; the task goes back to its queue".to_owned()
        }
        (true, s) => format!("the claim already ended ({s})"),
    };
    StoreError::Conflict(format!("task {id}: {why}"))
}

/// The lease a claim made or renewed at `now` gets: `heartbeat_ms` from now, but never
/// past the attempt's `timeout_ms` from its claim.
pub fn lease_end(
    now: Timestamp,
    claimed_at: Timestamp,
    heartbeat_ms: u64,
    timeout_ms: Option<u64>,
) -> Timestamp {
    let beat = now + chrono::Duration::milliseconds(heartbeat_ms as i64);
    match timeout_ms {
        Some(t) => beat.min(claimed_at + chrono::Duration::milliseconds(t as i64)),
        None => beat,
    }
}

/// Why an expired claim ended, as its error: the attempt's `timeout_ms` ran out, or the
/// worker stopped sending heartbeats.
pub fn expiry_error(task: &TaskRecord, at: Timestamp) -> String {
    let worker = task.worker.as_deref().unwrap_or("?");
    let ran = task
        .claimed_at
        .map(|c| (at - c).num_milliseconds())
        .unwrap_or_default();
    match task.timeout_ms {
        Some(t) if ran >= t as i64 => {
            format!("timed out: worker {worker} did not finish within timeout_ms {t}")
        }
        _ => format!(
            "timed out: worker {worker} sent no heartbeat within heartbeat_ms {}",
            task.heartbeat_ms
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(ms: i64) -> Timestamp {
        chrono::Utc.timestamp_millis_opt(ms).single().unwrap()
    }

    #[test]
    fn a_lease_never_runs_past_the_attempts_timeout() {
        assert_eq!(lease_end(at(1_000), at(1_000), 500, None), at(1_500));
        assert_eq!(lease_end(at(1_000), at(1_000), 500, Some(300)), at(1_300));
        assert_eq!(lease_end(at(2_000), at(1_000), 500, Some(1_200)), at(2_200));
    }

    #[test]
    fn statuses_read_back_as_written() {
        for s in [
            TaskStatus::Waiting,
            TaskStatus::Claimed,
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Expired,
            TaskStatus::Canceled,
        ] {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), s);
        }
        assert!("DONE".parse::<TaskStatus>().is_err());
    }
}
