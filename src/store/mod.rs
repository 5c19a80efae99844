//! Persistence: the [`Store`] trait and its implementations.
//!
//! The store is the single source of truth. Every change to a run is one atomic
//! [`Transition`] guarded by a [`Guard`] (compare-and-set on the run's revision, owner or
//! status), so concurrent deciders (two approvers, a cancel racing the engine, two
//! replicas) can never both win. Implementations batch concurrent writes into shared
//! commits (group commit); a call returns only after its data is committed, which is what
//! lets callers publish to the API and SSE afterwards. Only this module knows SQL.

pub mod curation;
pub mod encoding;
pub mod lifecycle;
pub mod postgres;
pub mod sqlite;
pub mod tasks;
pub mod timed;
pub mod triggers;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

pub use crate::model::WriteStats;
pub use curation::{Archived, Curation, Deletion, WorkflowEntry, WorkflowFilter, WorkflowHead};
pub use lifecycle::{Lifecycle, WriteHealth};
pub use tasks::{TaskOp, TaskStore};

use crate::model::{
    Approval, LogEntry, NewEvent, NewLogEntry, Page, PageRequest, RetryRecord, Run, RunBudget,
    RunControl, RunExtra, RunFilter, RunStatus, RunTrigger, StepRun, TemplateRecord, Timestamp,
    WorkflowVersion,
};
pub use triggers::{
    EventFilter, Overlap, Schedule, ScheduleFire, ScheduleUpdate, SecretHeader, WebhookTrigger,
};

/// The error behind a store failure, shared so that [`StoreError`] stays cheap to clone.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// What went wrong in the store, phrased as what the caller does next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist: answer 404.
    #[error("{0} not found")]
    NotFound(String),
    /// A guard or uniqueness rule refused the change: answer 409, or re-read and decide again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request itself is malformed (e.g. a cursor this store never gave out): answer 400.
    #[error("{0}")]
    Invalid(String),
    /// The database cannot be reached or refused to work; try again later.
    #[error("store unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// Stored data could not be decoded; a bug or a hand-edited database.
    #[error("corrupt stored data: {what}")]
    Corrupt {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl StoreError {
    /// The store cannot do `what` now, for a reason of its own.
    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::Unavailable {
            what: what.into(),
            cause: None,
        }
    }

    /// The store cannot do `what` now because of `cause`.
    pub fn unavailable_by(
        what: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            what: what.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// Stored data in `what` could not be decoded because of `cause`.
    pub fn corrupt_by(
        what: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Corrupt {
            what: what.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// True when the store may work again later (a retry or a `503`).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A new workflow version to append. For [`Store::create_workflow`] it becomes version 1;
/// for [`Store::add_workflow_version`] the store assigns the next number atomically.
#[derive(Debug, Clone)]
pub struct NewWorkflowVersion {
    pub id: String,
    pub name: String,
    pub definition: Value,
    pub created_by: Option<String>,
    pub restored_from: Option<u32>,
}

/// A claim on an `Idempotency-Key`: the same key with the same body hash returns the run
/// it first created; with another hash it is a conflict. Expired keys are free again.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: String,
    pub body_hash: String,
    pub expires_at: Timestamp,
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub workflow_id: String,
    pub workflow_version: u32,
    pub context: Map<String, Value>,
    pub steps: Vec<StepRun>,
    /// The run whose `workflow` step starts this one, and this run's depth below it.
    pub parent: Option<(String, u32)>,
    /// The server that will execute it now, or `None` to leave it queued for a claim.
    pub owner: Option<Lease>,
    pub idempotency: Option<IdempotencyClaim>,
    pub logs: Vec<NewLogEntry>,
    pub events: Vec<NewEvent>,
    /// The token budget the run is held to.
    pub budget: Option<RunBudget>,
    /// What started it (a schedule's tick, a webhook); `None` for `POST /v1/runs`.
    pub trigger: Option<RunTrigger>,
    /// The schedule tick it fires, claimed in the same commit (`Conflict` when taken).
    pub schedule: Option<ScheduleFire>,
}

impl NewRun {
    /// The run as created (its logs and events are written separately).
    pub fn into_run(self, at: Timestamp) -> Run {
        let extra = self.run_extra().unwrap_or_default();
        Run {
            id: self.id,
            workflow_id: self.workflow_id,
            workflow_version: self.workflow_version,
            status: RunStatus::Pending,
            current_step: 0,
            parent_run_id: self.parent.map(|(id, _)| id),
            context: self.context,
            steps: self.steps,
            error: None,
            approvals: Vec::new(),
            usage: Map::new(),
            budget: self.budget,
            retries: Vec::new(),
            created_at: at,
            updated_at: at,
            started_at: None,
            finished_at: None,
            trigger: self.trigger,
            control: RunControl {
                extra,
                ..RunControl::default()
            },
        }
    }

    /// The run's extra bookkeeping at creation (its depth), or `None` when there is none.
    pub fn run_extra(&self) -> Option<RunExtra> {
        let extra = RunExtra {
            depth: self.parent.as_ref().map_or(0, |(_, depth)| *depth),
            events: Vec::new(),
        };
        (!extra.is_empty()).then_some(extra)
    }
}

/// Ownership of a run by one server, valid until renewed or expired.
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    pub ttl: Duration,
}

/// The result of [`Store::create_run`]: a new run, or the one an idempotency key already named.
#[derive(Debug, Clone)]
pub struct CreatedRun {
    pub run: Run,
    pub created: bool,
    /// The log entries written with a new run.
    pub logs: Vec<LogEntry>,
}

/// Preconditions of a [`Transition`]; all that are set must hold or nothing is written.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// The run's revision is exactly this (nothing changed since it was read).
    pub rev: Option<u64>,
    /// The run is owned by this server.
    pub owner: Option<String>,
    /// The run's status is one of these.
    pub status_in: Option<Vec<RunStatus>>,
}

/// How a transition changes a run's owner.
#[derive(Debug, Clone, Default)]
pub enum OwnerChange {
    #[default]
    Keep,
    /// The owner keeps the run and its lease now runs for this long again: a busy run is
    /// kept by its own commits, whether or not a heartbeat got to it. Alone it changes
    /// nothing worth a commit.
    Renew(Duration),
    Take(Lease),
    Release,
    /// Released on purpose while steps may still be `RUNNING` (a graceful shutdown): the
    /// run is marked left cleanly, so that the next owner does not count its steps in
    /// flight as struck down by a crash. `Renew` and `Take` clear the mark.
    Leave,
}

/// The run-level fields every transition rewrites (the engine holds them all in memory).
#[derive(Debug, Clone)]
pub struct RunHead {
    pub status: RunStatus,
    pub current_step: usize,
    pub error: Option<String>,
    pub usage: Map<String, Value>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub active_ms: u64,
    /// When the parked run must be woken.
    pub wake_at: Option<Timestamp>,
    /// Kept events and the run's depth (see [`crate::model::RunExtra`]).
    pub extra: RunExtra,
}

impl RunHead {
    /// The head of a run as read.
    pub fn of(run: &Run) -> Self {
        Self {
            status: run.status,
            current_step: run.current_step,
            error: run.error.clone(),
            usage: run.usage.clone(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            active_ms: run.control.active_ms,
            wake_at: run.control.wake_at,
            extra: run.control.extra.clone(),
        }
    }
}

/// One atomic change to a run: its head, changed step rows, new approvals, log entries and
/// hook events. Committed whole or not at all, and only when `guard` holds.
#[derive(Debug, Clone)]
pub struct Transition {
    pub run_id: String,
    pub guard: Guard,
    pub head: Option<RunHead>,
    /// The new context, only when it changed (it may be large).
    pub context: Option<Map<String, Value>>,
    /// The run's whole re-run history and budget, only when a re-run changed them.
    pub rerun: Option<Rerun>,
    pub owner: OwnerChange,
    /// Changed steps by index, as whole rows.
    pub steps: Vec<(usize, StepRun)>,
    pub approvals: Vec<Approval>,
    pub logs: Vec<NewLogEntry>,
    pub events: Vec<NewEvent>,
    /// Task rows the change writes (a step starts or stops waiting for a task).
    pub tasks: Vec<TaskOp>,
}

impl Transition {
    /// An empty transition of `run_id` under `guard`.
    pub fn new(run_id: impl Into<String>, guard: Guard) -> Self {
        Self {
            run_id: run_id.into(),
            guard,
            head: None,
            context: None,
            rerun: None,
            owner: OwnerChange::Keep,
            steps: Vec::new(),
            approvals: Vec::new(),
            logs: Vec::new(),
            events: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// True when committing would change nothing.
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
            && self.context.is_none()
            && self.rerun.is_none()
            && matches!(self.owner, OwnerChange::Keep | OwnerChange::Renew(_))
            && self.steps.is_empty()
            && self.approvals.is_empty()
            && self.logs.is_empty()
            && self.events.is_empty()
            && self.tasks.is_empty()
    }
}

/// What a re-run rewrites beside the head: the history it added to, the version it runs
/// and the budget of that version. On another version the step rows are rewritten by the
/// transition, and rows past the version's `steps` are removed.
#[derive(Debug, Clone)]
pub struct Rerun {
    pub retries: Vec<RetryRecord>,
    pub workflow_version: u32,
    pub budget: Option<RunBudget>,
    pub steps: usize,
}

/// What a committed transition produced.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The run's revision after the commit.
    pub rev: u64,
    /// The run's `updated_at` as stored.
    pub at: Timestamp,
    /// The log entries written, with their sequence numbers.
    pub logs: Vec<LogEntry>,
}

/// A hook event as stored in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Position in the outbox, increasing in commit order.
    pub id: u64,
    pub run_id: String,
    pub workflow_id: String,
    /// Increases by one per event within a run.
    pub seq: u64,
    pub event: NewEvent,
}

/// Limits applied when appending client log lines.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Most entries a run's log may hold; appends beyond are refused whole.
    pub max_entries: u64,
}

/// A change another process committed to the shared database, announced after its commit
/// (PostgreSQL `LISTEN/NOTIFY`). Notices are wake-ups, never the source of truth: a
/// receiver re-reads the store, and [`Notice::Resync`] says some may have been missed.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Run `run_id` changed.
    Run {
        run_id: String,
        /// The run's head changed (a transition committed); its revision after the change.
        rev: Option<u64>,
        /// Log entries `first..=last` were appended.
        logs: Option<(u64, u64)>,
        /// The run may now be claimed (queued, released, or decided to go on without an owner).
        claimable: bool,
    },
    /// A task was put on queue `queue` (or back on it).
    Queue { queue: String },
    /// Notices may have been lost (the listener reconnected): re-check what matters.
    Resync,
}

/// Persistence of workflows, templates, runs, logs, leases, the hook outbox, (through
/// [`TaskStore`]) task queues, and the store's own [`Lifecycle`] and [`Curation`] of what it
/// holds.
#[async_trait]
pub trait Store: Lifecycle + Curation + TaskStore + Send + Sync + 'static {
    /// Answers when the store can serve requests (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Called once on a clean stop, after every other call: leaves the store's files
    /// compact (the embedded store truncates its WAL).
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Creates a workflow at version 1; `Conflict` when the id exists.
    async fn create_workflow(&self, new: NewWorkflowVersion)
    -> Result<WorkflowVersion, StoreError>;
    /// Appends the next version of an existing workflow; `NotFound` when there is none.
    async fn add_workflow_version(
        &self,
        new: NewWorkflowVersion,
    ) -> Result<WorkflowVersion, StoreError>;
    /// A version of a workflow (the latest when `version` is `None`).
    async fn get_workflow(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowVersion, StoreError>;
    /// Latest versions of all workflows, newest workflow first.
    async fn list_workflows(&self, page: &PageRequest)
    -> Result<Page<WorkflowVersion>, StoreError>;
    /// Every version of a workflow, newest first; `NotFound` for an unknown workflow.
    async fn list_workflow_versions(&self, id: &str) -> Result<Vec<WorkflowVersion>, StoreError>;

    /// Stores a template; `Conflict` when the name exists.
    async fn create_template(&self, template: TemplateRecord)
    -> Result<TemplateRecord, StoreError>;
    /// A stored template.
    async fn get_template(&self, name: &str) -> Result<TemplateRecord, StoreError>;
    /// All stored templates by name.
    async fn list_templates(&self) -> Result<Vec<TemplateRecord>, StoreError>;

    /// Creates a run, or returns the run its idempotency key already created.
    async fn create_run(&self, new: NewRun) -> Result<CreatedRun, StoreError>;
    /// A run with its steps and approvals.
    async fn get_run(&self, id: &str) -> Result<Run, StoreError>;
    /// Runs matching `filter`, newest first.
    async fn list_runs(
        &self,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<Run>, StoreError>;
    /// Commits a transition if its guard holds (`Conflict` otherwise).
    async fn commit(&self, transition: Transition) -> Result<Committed, StoreError>;

    /// Takes up to `limit` runs that need an owner (`PENDING` or `RUNNING`, unowned or with
    /// an expired lease), oldest first, and returns their ids.
    async fn claim_runs(
        &self,
        owner: &str,
        ttl: Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// Extends the leases of every run `owner` holds; returns the runs renewed (each was
    /// `owner`'s at that moment, so its lease runs at least `ttl` from the call).
    async fn renew_leases(&self, owner: &str, ttl: Duration) -> Result<Vec<String>, StoreError>;
    /// Parked runs (`WAITING_APPROVAL`, `WAITING`) whose wake-up time has passed.
    async fn due_approvals(&self, now: Timestamp, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Appends client lines to a run's log; `NotFound` for an unknown run, `Conflict` when
    /// the log would exceed `limits.max_entries` (nothing is written then).
    async fn append_logs(
        &self,
        run_id: &str,
        entries: Vec<NewLogEntry>,
        limits: LogLimits,
    ) -> Result<Vec<LogEntry>, StoreError>;
    /// Log entries with `seq > after`, in order, at most `limit`.
    async fn read_logs(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// Hook events after outbox position `after_id`, in outbox order. Hook delivery moves a
    /// cursor past what this returns, so an implementation must never return an event while
    /// one with a smaller id can still become visible (SQLite's single writer commits ids in
    /// order; PostgreSQL's readers stop below its writers' horizon); otherwise that event
    /// would be skipped. Every event committed before the call is returned (up to
    /// `limit`), unless a writer stalls (PostgreSQL waits for its writers up to 2 s).
    async fn read_events(
        &self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// The outbox position a hook target has acknowledged up to (0 when none).
    async fn event_cursor(&self, target: &str) -> Result<u64, StoreError>;
    /// Records that `target` has received every event up to `id`.
    async fn set_event_cursor(&self, target: &str, id: u64) -> Result<(), StoreError>;

    /// Deletes expired idempotency keys; returns how many.
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError>;

    /// Changes committed by *other* processes sharing this store, for stores that several
    /// servers can share; `None` when no other process can write (the embedded store).
    fn notices(&self) -> Option<broadcast::Receiver<Notice>> {
        None
    }

    // Schedules, webhook triggers and the events feed (DESIGN §10, §11).

    /// Stores a schedule; `Conflict` when the id exists.
    async fn create_schedule(&self, schedule: Schedule) -> Result<Schedule, StoreError>;
    /// A stored schedule.
    async fn get_schedule(&self, id: &str) -> Result<Schedule, StoreError>;
    /// Every schedule, by id.
    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError>;
    /// Replaces a schedule's definition, keeping what it fired; `NotFound` when none.
    async fn update_schedule(&self, update: ScheduleUpdate) -> Result<Schedule, StoreError>;
    /// Removes a schedule; `NotFound` when none.
    async fn delete_schedule(&self, id: &str) -> Result<(), StoreError>;
    /// Schedules with a tick due at `now` (`next_fire_at <= now`), earliest first.
    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError>;
    /// The earliest `next_fire_at` of all schedules, if any is active.
    async fn next_schedule_tick(&self) -> Result<Option<Timestamp>, StoreError>;
    /// Moves a schedule from tick `expect` to `next` without a run (a skipped tick); false
    /// when `next_fire_at` was no longer `expect` (another server claimed it).
    async fn advance_schedule(
        &self,
        id: &str,
        expect: Timestamp,
        next: Option<Timestamp>,
    ) -> Result<bool, StoreError>;
    /// Stores a webhook trigger; `Conflict` when the name exists.
    async fn create_webhook(&self, trigger: WebhookTrigger) -> Result<WebhookTrigger, StoreError>;
    /// A stored webhook trigger.
    async fn get_webhook(&self, name: &str) -> Result<WebhookTrigger, StoreError>;
    /// Every webhook trigger, by name.
    async fn list_webhooks(&self) -> Result<Vec<WebhookTrigger>, StoreError>;
    /// Removes a webhook trigger; `NotFound` when none.
    async fn delete_webhook(&self, name: &str) -> Result<(), StoreError>;
    /// Events after outbox position `after_id` that pass `filter`, in outbox order, at most
    /// `limit`; the same order guarantee as [`Store::read_events`].
    async fn list_events(
        &self,
        filter: &EventFilter,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// How many runs have `status` (for metrics; must be cheap, e.g. an index count).
    async fn count_runs(&self, status: RunStatus) -> Result<u64, StoreError>;
    /// The outbox position of the newest event that readers may read (0 when there is
    /// none): no event below it can still appear.
    async fn outbox_head(&self) -> Result<u64, StoreError>;
}

/// A shared store handle.
pub type DynStore = Arc<dyn Store>;
