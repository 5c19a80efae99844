//! The engine: starts runs, executes them, and applies decisions about them.
//!
//! Runs live in the store; the engine keeps in memory only the runs it is executing (one
//! task each, see [`runner`]). Ownership goes through leases: a run executes on the server
//! that owns it, a queued or orphaned run is claimed by whichever server has capacity, and
//! parked runs (waiting for approval) belong to nobody until a decision wakes them.
//! Every change is committed to the store before it is published to log subscribers.

mod attempts;
mod background;
mod children;
mod decide;
mod failure_details;
mod lease;
pub mod rerun;
mod retention;
pub mod retry;
mod runner;
mod shared;
pub mod state;
pub mod tasks;
mod views;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actions::Registry;
use crate::clock::Clock;
use crate::definition::{Validator, Workflow};
use crate::expr::Redactor;
use crate::logs::{LogHub, LogTail};
use crate::metrics::Metrics;
use crate::model::{
    LogEntry, NewLogEntry, Page, PageRequest, Run, RunFilter, RunStatus, RunTrigger,
};
use crate::problems::Violation;
use crate::sandbox::Sandbox;
use crate::secret::Secret;
use crate::store::{DynStore, LogLimits, ScheduleFire, StoreError};

pub use decide::{Intervention, Refusal};
pub use rerun::RetryRequest;
use shared::Shared;
pub use views::RunDocument;

/// Why the engine refused or failed a request, phrased for the API to map.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Invalid {
        message: String,
        violations: Vec<Violation>,
    },
    /// The store failed (unavailable, or holding data it cannot read).
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(why) => Self::Conflict(why),
            StoreError::Invalid(why) => Self::Invalid {
                message: why,
                violations: Vec::new(),
            },
            other => Self::Store(other),
        }
    }
}

impl From<Refusal> for EngineError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Conflict(why) => Self::Conflict(why),
            Refusal::Invalid {
                message,
                violations,
            } => Self::Invalid {
                message,
                violations,
            },
        }
    }
}

/// Engine tuning taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_active_runs: usize,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
    pub idempotency_ttl: Duration,
    /// Declared secrets, by name, for `secrets.NAME`.
    pub secrets: Arc<BTreeMap<String, Secret>>,
    /// Masks every declared secret in what is stored.
    pub redactor: Redactor,
    /// Most entries a run's log may hold before client appends are refused.
    pub max_log_entries: u64,
    /// Size limits of inputs, contexts and outputs.
    pub limits: RunLimits,
    /// On shutdown, how long steps in flight may take to finish.
    pub shutdown_grace: Duration,
    /// Where the run state machine reads the time.
    pub clock: Clock,
    /// How long finished runs are kept (`retention.runs`; `None`: forever), and how often
    /// retention looks.
    pub run_retention: Option<Duration>,
    pub retention_interval: Duration,
}

/// Size limits applied to runs, in bytes of compact JSON (`limits.*_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// A step's rendered input; larger fails the step.
    pub max_input_bytes: usize,
    /// The run context: at start (`400`), after approvals (`400`) and after a step's `set`
    /// (the step fails).
    pub max_context_bytes: usize,
    /// A step's output as stored; larger outputs are truncated (see `crate::size`). A
    /// `foreach` step's items together are held to it too.
    pub max_output_bytes: usize,
    /// The token budget of runs whose workflow sets none (`limits.run_tokens`).
    pub run_tokens: Option<crate::model::RunBudget>,
    /// Most items one `foreach` step may run over.
    pub foreach_items: usize,
}

/// A request to start a run.
#[derive(Debug, Clone)]
pub struct StartRun {
    pub workflow_id: String,
    pub version: Option<u32>,
    pub context: Map<String, Value>,
    /// `Idempotency-Key` and the hash of the request body it came with.
    pub idempotency: Option<(String, String)>,
    /// The run whose `workflow` step starts this one, and the new run's depth.
    pub parent: Option<(String, u32)>,
    /// What started it, recorded on the run; `None` for `POST /v1/runs`.
    pub trigger: Option<RunTrigger>,
    /// The schedule tick it fires, claimed in the run's own commit: `Conflict` when another
    /// server fired it first.
    pub schedule: Option<ScheduleFire>,
}

/// The engine handle; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// Compiled workflows kept in memory; versions never change, so entries never go stale.
pub(crate) const WORKFLOW_CACHE: usize = 1024;

/// Child runs nest at most this deep (a cycle of workflows calling each other stops here).
pub const MAX_DEPTH: u32 = 10;

/// On shutdown, time allowed beyond the grace period for commits and loops to finish.
const SETTLE: Duration = Duration::from_secs(5);

/// What the engine works with, built by the app.
pub struct Parts {
    pub store: DynStore,
    pub validator: Arc<Validator>,
    pub actions: Registry,
    pub sandbox: Arc<Sandbox>,
    pub hub: Arc<LogHub>,
    pub metrics: Arc<Metrics>,
    /// This server's lease-holder identity.
    pub owner: String,
}

impl Engine {
    /// Must be called within the Tokio runtime the engine's tasks should run on.
    pub fn new(parts: Parts, settings: Settings) -> Self {
        let permits = Arc::new(Semaphore::new(settings.max_active_runs));
        let fences = lease::Fences::new(settings.lease_ttl);
        let Parts {
            store,
            validator,
            actions,
            sandbox,
            hub,
            metrics,
            owner,
        } = parts;
        Self {
            shared: Arc::new(Shared {
                store,
                validator,
                actions,
                sandbox,
                hub,
                owner,
                settings,
                metrics,
                workflows: Mutex::default(),
                active: Mutex::default(),
                permits,
                fences,
                wake: Notify::new(),
                queued: AtomicBool::new(true),
                shutdown: CancellationToken::new(),
                closed: CancellationToken::new(),
                runs: TaskTracker::new(),
                tasks: TaskTracker::new(),
                queues: tasks::Queues::default(),
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// Starts the background loops: claiming queued and orphaned runs (which resumes every
    /// run left `RUNNING` by a previous process), lease renewal, approval timeouts, expiry
    /// of idempotency keys, and retention of finished runs.
    pub fn start(&self) {
        background::spawn_all(self.shared.clone());
    }

    /// This server's lease-holder identity.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// Runs executing on this server now.
    pub fn active_runs(&self) -> usize {
        self.shared.active.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Stops the engine. Run tasks start no more steps and give those in flight up to
    /// `shutdown_grace` to finish; each run then either ends, parks, or is left `RUNNING`
    /// with its lease released, and resumes (re-running the steps cut off) on the next
    /// start. New and claimed runs are not started. Once the runs are settled, log streams
    /// end with a final event and the background loops stop.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        let grace = shared.settings.shutdown_grace;
        tracing::info!(
            runs = self.active_runs(),
            grace_ms = grace.as_millis() as u64,
            "engine draining: no new steps; waiting for steps in flight"
        );
        shared.shutdown.cancel();
        shared.runs.close();
        if tokio::time::timeout(grace + SETTLE, shared.runs.wait())
            .await
            .is_err()
        {
            tracing::warn!("some run tasks did not record their state in time");
        }
        shared.closed.cancel();
        shared.tasks.close();
        if tokio::time::timeout(SETTLE, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some engine loops did not stop in time");
        }
        tracing::info!("engine stopped");
    }

    /// Creates a run of a stored workflow and starts it (or queues it when this server is
    /// at capacity). With an idempotency key, a repeat returns the first run, `created` false.
    pub async fn start_run(&self, request: StartRun) -> Result<(Run, bool), EngineError> {
        self.shared.start_run(request).await
    }

    /// Sends event `name` with `data` to a run: the step waiting for it takes it, or it is
    /// kept for the step that will wait for it.
    pub async fn send_event(
        &self,
        run_id: &str,
        name: &str,
        data: Value,
        by: &str,
    ) -> Result<Run, EngineError> {
        let event = Intervention::Event {
            name: name.to_owned(),
            data,
            by: by.to_owned(),
        };
        self.shared.decide(run_id, event).await
    }

    /// Applies a decision (approve, reject, cancel) to a run, wherever it is.
    pub async fn decide(&self, run_id: &str, request: Intervention) -> Result<Run, EngineError> {
        self.shared.decide(run_id, request).await
    }

    /// Re-runs a finished run from a step, optionally with context members set or on
    /// another version; see [`rerun`].
    pub async fn retry_run(&self, run_id: &str, request: RetryRequest) -> Result<Run, EngineError> {
        rerun::retry_run(&self.shared, run_id, request).await
    }

    /// A run with its steps.
    pub async fn get_run(&self, id: &str) -> Result<Run, EngineError> {
        Ok(self.shared.store.get_run(id).await?)
    }

    /// A run as served: for a run executing here, its view at the latest committed
    /// revision without a store round trip (the first read asks the run's task for it);
    /// otherwise (or with `fresh`) read from the store.
    pub async fn read_run(&self, id: &str, fresh: bool) -> Result<RunDocument, EngineError> {
        if !fresh {
            if let Some(view) = self.shared.view_of(id) {
                return Ok(view.document());
            }
            if let Some(view) = self.shared.view_from_task(id).await {
                return Ok(view.document());
            }
        }
        let run = self.shared.store.get_run(id).await?;
        let view = Arc::new(views::RunView::new(&run));
        self.shared.offer_view(id, view.clone());
        Ok(view.document())
    }

    /// Runs matching `filter`, newest first.
    pub async fn list_runs(
        &self,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<Run>, EngineError> {
        Ok(self.shared.store.list_runs(filter, page).await?)
    }

    /// Appends client lines to a run's log and publishes them.
    pub async fn append_client_logs(
        &self,
        run_id: &str,
        entries: Vec<NewLogEntry>,
    ) -> Result<Vec<LogEntry>, EngineError> {
        let limits = LogLimits {
            max_entries: self.shared.settings.max_log_entries,
        };
        let written = self
            .shared
            .store
            .append_logs(run_id, entries, limits)
            .await?;
        self.shared.hub.publish(run_id, &written);
        Ok(written)
    }

    /// Entries of a run's log with `seq > after`, in order, at most `limit`.
    pub async fn read_logs(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, EngineError> {
        Ok(self.shared.store.read_logs(run_id, after, limit).await?)
    }

    /// A reader of a run's log after entry `after`: the backlog, then live entries until
    /// the run is over (or the server stops). `NotFound` for an unknown run; `Invalid`
    /// when the log has no entry `after` (a position it never gave out).
    pub async fn tail_logs(&self, run_id: &str, after: u64) -> Result<LogTail, EngineError> {
        let store = &self.shared.store;
        // A run executing here is not over as far as its tail can tell (the tail learns the
        // end from the entries that announce it): no store read for its status.
        let status = match self.shared.task_of(run_id) {
            Some(_) => RunStatus::Running,
            None => store.get_run(run_id).await?.status,
        };
        if after > 0 && store.read_logs(run_id, after - 1, 1).await?.is_empty() {
            return Err(EngineError::Invalid {
                message: format!(
                    "the log of run {run_id} has no entry {after} to resume after; \
                     resume after an id this stream sent, or from the start"
                ),
                violations: Vec::new(),
            });
        }
        let tail = LogTail::new(
            store.clone(),
            self.shared.hub.clone(),
            run_id,
            after,
            status,
        );
        Ok(tail.stop_on(self.shared.closed.clone()))
    }

    /// True when run `run_id` is finished and its log holds nothing after entry `after`:
    /// a stream resumed there would only say it ended.
    pub async fn log_is_drained(&self, run_id: &str, after: u64) -> Result<bool, EngineError> {
        let store = &self.shared.store;
        let run = store.get_run(run_id).await?;
        Ok(run.status.is_terminal() && store.read_logs(run_id, after, 1).await?.is_empty())
    }

    /// The compiled definition of a workflow version.
    pub async fn workflow(&self, id: &str, version: u32) -> Result<Arc<Workflow>, EngineError> {
        self.shared.workflow(id, version).await
    }
}
