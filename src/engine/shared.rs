//! The engine's shared core: what the handle, the run tasks and the background loops all
//! reach. It caches compiled workflows, hands out execution slots, commits transitions
//! (then publishes their log entries and counts their outcomes), and applies decisions to
//! runs wherever they are: through a run's own task when it executes here, else on the
//! stored run under a revision guard.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::decide::Intervention;
use super::runner::{self, RunMessage};
use super::state::RunState;
use super::views::{RunPieces, RunView, ViewSlot};
use super::{EngineError, Settings, StartRun, WORKFLOW_CACHE};
use crate::actions::Registry;
use crate::definition::{Validator, Workflow};
use crate::logs::LogHub;
use crate::metrics::Metrics;
use crate::model::{LogLevel, NewLogEntry, Run, RunStatus, RunTrigger, StepRun, StepStatus, now};
use crate::problems::Violation;
use crate::sandbox::Sandbox;
use crate::size::json_len;
use crate::store::{
    Committed, DynStore, Guard, IdempotencyClaim, Lease, NewRun, OwnerChange, StoreError,
    Transition,
};

/// The state every engine task shares.
pub(crate) struct Shared {
    pub(super) store: DynStore,
    pub(super) validator: Arc<Validator>,
    pub(super) actions: Registry,
    pub(super) sandbox: Arc<Sandbox>,
    pub(super) hub: Arc<LogHub>,
    pub(super) owner: String,
    pub(super) settings: Settings,
    pub(super) metrics: Arc<Metrics>,
    pub(super) workflows: Mutex<HashMap<(String, u32), Arc<Workflow>>>,
    /// The runs executing here: each one's task, and its view for readers.
    pub(super) active: Mutex<HashMap<String, Active>>,
    pub(super) permits: Arc<Semaphore>,
    /// The lease fences of the runs executing here.
    pub(super) fences: super::lease::Fences,
    pub(super) wake: Notify,
    /// Set when runs may be waiting in the store for a slot here (created or resumed
    /// without one, or announced claimable by another server); cleared by the claim loop
    /// just before it claims. A run task ending wakes the claim loop only while it is
    /// set, so that a busy server does not query for queued runs after every run.
    pub(super) queued: AtomicBool,
    /// Cancelled when the server starts to stop: run tasks stop starting steps and drain,
    /// and the claim, approval and purge loops end.
    pub(super) shutdown: CancellationToken,
    /// Cancelled once run tasks have drained: log streams end with a final event and the
    /// heartbeat stops (leases are renewed while runs drain).
    pub(super) closed: CancellationToken,
    /// Run tasks, and claimed runs waiting for a slot.
    pub(super) runs: TaskTracker,
    /// The background loops.
    pub(super) tasks: TaskTracker,
    /// The runtime every engine task runs on, whichever thread asked for it (API
    /// handlers run on actix's per-worker runtimes).
    pub(super) runtime: tokio::runtime::Handle,
    /// Task queues: parked polls, the sweeper's wake-up, workers seen.
    pub(super) queues: super::tasks::Queues,
}

/// A run executing here.
pub(crate) struct Active {
    pub(super) task: mpsc::UnboundedSender<RunMessage>,
    pub(super) view: ViewSlot,
}

/// The run and step statuses a transition reaches, for metrics.
#[derive(Default)]
struct StatusTally {
    /// The final status a run reached, and how long it took from its start.
    run: Option<(RunStatus, Option<std::time::Duration>)>,
    steps: Vec<(String, StepStatus)>,
}

impl StatusTally {
    pub(super) fn of(tx: &Transition) -> Self {
        let mut out = Self::default();
        for change in tx.logs.iter().filter_map(|e| e.status.as_ref()) {
            match (&change.step, change.step_status) {
                (None, _) if change.run_status.is_terminal() => {
                    let took = tx
                        .head
                        .as_ref()
                        .and_then(|h| (h.finished_at? - h.started_at?).to_std().ok());
                    out.run = Some((change.run_status, took));
                }
                (Some(name), Some(status)) if status.is_finished() => {
                    let action = tx.steps.iter().find(|(_, s)| &s.name == name);
                    if let Some((_, step)) = action {
                        out.steps.push((step.action.clone(), status));
                    }
                }
                _ => {}
            }
        }
        out
    }

    pub(super) fn record(self, metrics: &Metrics) {
        for (action, status) in &self.steps {
            metrics.step_finished(action, *status);
        }
        if let Some((status, took)) = self.run {
            metrics.run_finished(status, took);
        }
    }
}

impl Shared {
    pub(super) fn lease(&self) -> Lease {
        Lease {
            owner: self.owner.clone(),
            ttl: self.settings.lease_ttl,
        }
    }

    pub(super) async fn workflow(
        &self,
        id: &str,
        version: u32,
    ) -> Result<Arc<Workflow>, EngineError> {
        let key = (id.to_owned(), version);
        if let Some(wf) = self
            .workflows
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            return Ok(wf);
        }
        let stored = self.store.get_workflow(id, Some(version)).await?;
        let wf = Arc::new(self.validator.validate(&stored.definition).map_err(|e| {
            let detail: Vec<String> = e
                .violations
                .iter()
                .map(|v| format!("{} {}", v.pointer, v.message))
                .collect();
            EngineError::Conflict(format!(
                "workflow {id} version {version} is no longer valid on this server: {}",
                detail.join("; ")
            ))
        })?);
        if let Ok(mut cache) = self.workflows.lock() {
            if cache.len() >= WORKFLOW_CACHE {
                cache.clear();
            }
            cache.insert(key, wf.clone());
        }
        Ok(wf)
    }

    /// A slot to execute a run now, unless there is none or the server is stopping (then
    /// the run is left for a claim after the next start).
    pub(super) fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        if self.shutdown.is_cancelled() {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Gives up this server's claim on a run it has not started, so that the next start
    /// (of this or another server) can take it at once rather than after the lease expires.
    pub(super) async fn release(&self, run_id: &str) {
        let guard = Guard {
            rev: None,
            owner: Some(self.owner.clone()),
            status_in: Some(vec![RunStatus::Pending, RunStatus::Running]),
        };
        let mut tx = Transition::new(run_id, guard);
        tx.owner = OwnerChange::Release;
        match self.commit(tx).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => tracing::warn!(run_id, error = %e, "releasing a claimed run failed"),
        }
    }

    /// Commits a transition, publishes its log entries, and counts the run and step
    /// outcomes it recorded (every status change is in the log, so nothing is missed).
    pub(super) async fn commit(&self, tx: Transition) -> Result<Committed, StoreError> {
        let run_id = tx.run_id.clone();
        let outcomes = StatusTally::of(&tx);
        let filled = super::tasks::filled_queues(&tx);
        let committed = self.store.commit(tx).await?;
        self.committed_rev(&run_id, committed.rev);
        outcomes.record(&self.metrics);
        self.queues.filled(&filled, &self.metrics);
        self.hub.publish(&run_id, &committed.logs);
        Ok(committed)
    }

    /// Creates a run of a stored workflow and starts it (or queues it when this server is
    /// at capacity). With an idempotency key, a repeat returns the first run, `created` false.
    pub(super) async fn start_run(
        self: &Arc<Self>,
        request: StartRun,
    ) -> Result<(Run, bool), EngineError> {
        let shared = self;
        let head = shared
            .store
            .workflow_head(&request.workflow_id, request.version)
            .await?;
        if let Some(archived) = &head.archived {
            return Err(EngineError::Conflict(format!(
                "workflow {} was archived by {} at {}; it starts no more runs",
                request.workflow_id,
                archived.by,
                archived
                    .at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )));
        }
        let (workflow_id, version) = (request.workflow_id.clone(), head.version);
        let wf = shared.workflow(&workflow_id, version).await?;
        // A webhook's delivery or a parent's values may hold NUL; API bodies cannot. The
        // request a webhook run keeps is read as `jsonb` by the run list's trigger filter on
        // PostgreSQL, which refuses `\u0000`.
        let mut request = request;
        crate::model::scrub_nul_map(&mut request.context);
        if let Some(RunTrigger::Webhook {
            request: Some(kept),
            ..
        }) = &mut request.trigger
        {
            crate::model::scrub_nul(kept);
        }
        let size = json_len(&request.context);
        let max = shared.settings.limits.max_context_bytes;
        if size > max {
            let message =
                format!("the context is {size} bytes, over limits.max_context_bytes ({max})");
            return Err(EngineError::Invalid {
                violations: vec![Violation::new("/context", message.clone())],
                message,
            });
        }
        let id = crate::ids::new(crate::ids::RUN);
        let permit = shared.try_slot();
        let expires_at =
            now() + chrono::Duration::from_std(shared.settings.idempotency_ttl).unwrap_or_default();
        let new = NewRun {
            id: id.clone(),
            workflow_id: workflow_id.clone(),
            workflow_version: version,
            context: request.context,
            steps: wf
                .steps
                .iter()
                .map(|s| StepRun::pending(s.id.clone(), s.name.clone(), s.action_name.clone()))
                .collect(),
            parent: request.parent,
            owner: permit.as_ref().map(|_| shared.lease()),
            idempotency: request
                .idempotency
                .map(|(key, body_hash)| IdempotencyClaim {
                    key,
                    body_hash,
                    expires_at,
                }),
            logs: vec![NewLogEntry::engine(
                LogLevel::Info,
                None,
                format!(
                    "run created from workflow {} version {}{}",
                    workflow_id,
                    version,
                    started_by(request.trigger.as_ref())
                ),
            )],
            events: Vec::new(),
            budget: super::state::effective_budget(wf.budget, shared.settings.limits.run_tokens),
            trigger: request.trigger,
            schedule: request.schedule,
        };
        let sent = tokio::time::Instant::now();
        let created = shared.store.create_run(new).await?;
        shared.hub.publish(&created.run.id, &created.logs);
        if created.created {
            match permit {
                Some(permit) => {
                    // Created with this server's lease: ours from `sent` on.
                    shared.fences.of(&created.run.id).prove(sent);
                    shared.spawn_run(created.run.clone(), permit)
                }
                None => shared.queue_wake(),
            }
        }
        Ok((created.run, created.created))
    }

    /// Starts the task of a run this server owns.
    pub(super) fn spawn_run(self: &Arc<Self>, run: Run, permit: OwnedSemaphorePermit) {
        self.spawn_task(run.id.clone(), Some(run), permit);
    }

    pub(super) fn spawn_task(
        self: &Arc<Self>,
        run_id: String,
        run: Option<Run>,
        permit: OwnedSemaphorePermit,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut active) = self.active.lock() {
            if active.contains_key(&run_id) {
                return;
            }
            active.insert(
                run_id.clone(),
                Active {
                    task: tx,
                    view: ViewSlot::default(),
                },
            );
        }
        self.runs.spawn_on(
            runner::drive(self.clone(), run_id, run, rx, permit),
            &self.runtime,
        );
    }

    pub(super) fn task_ended(&self, run_id: &str) {
        if let Ok(mut active) = self.active.lock() {
            active.remove(run_id);
        }
        self.fences.forget(run_id);
        if self.queued.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// The task of a run executing here.
    pub(super) fn task_of(&self, run_id: &str) -> Option<mpsc::UnboundedSender<RunMessage>> {
        let active = self.active.lock().ok()?;
        active.get(run_id).map(|a| a.task.clone())
    }

    /// The current view of a run executing here, if there is one (a miss marks the run
    /// watched: its task publishes its next commit).
    pub(super) fn view_of(&self, run_id: &str) -> Option<Arc<RunView>> {
        let mut active = self.active.lock().ok()?;
        active.get_mut(run_id)?.view.read()
    }

    /// Offers a view of a run executing here (kept unless something newer is known);
    /// true when it is kept.
    pub(super) fn offer_view(&self, run_id: &str, view: Arc<RunView>) -> bool {
        if let Ok(mut active) = self.active.lock()
            && let Some(a) = active.get_mut(run_id)
        {
            return a.view.offer(view);
        }
        false
    }

    /// The view of a run executing here as its task has committed it, kept for the next
    /// reads; `None` when there is no task, it holds changes not yet committed, it does not
    /// answer within [`VIEW_WAIT`], or something newer is known (the store has the answer).
    pub(super) async fn view_from_task(&self, run_id: &str) -> Option<Arc<RunView>> {
        let task = self.task_of(run_id)?;
        let (reply, answer) = oneshot::channel();
        task.send(RunMessage::View { reply }).ok()?;
        let view = tokio::time::timeout(VIEW_WAIT, answer).await.ok()?.ok()??;
        self.offer_view(run_id, view.clone()).then_some(view)
    }

    /// Publishes the run a task has just committed, when someone reads it, from the
    /// task's pieces of it (written outside the lock).
    pub(super) fn publish_view(&self, run: &Run, pieces: &mut RunPieces) {
        let wanted = self
            .active
            .lock()
            .ok()
            .and_then(|a| a.get(&run.id).map(|a| a.view.wants(run.control.rev)))
            .unwrap_or(false);
        if wanted {
            self.offer_view(&run.id, Arc::new(pieces.view(run)));
        }
    }

    /// Revision `rev` of a run is committed (here or, announced, elsewhere): a view of
    /// an older revision is no longer served.
    pub(super) fn committed_rev(&self, run_id: &str, rev: u64) {
        if let Ok(mut active) = self.active.lock()
            && let Some(a) = active.get_mut(run_id)
        {
            a.view.committed(rev);
        }
    }

    /// Wakes the claim loop for runs waiting in the store for a slot.
    pub(super) fn queue_wake(&self) {
        self.queued.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub(super) async fn decide(
        self: &Arc<Self>,
        run_id: &str,
        request: Intervention,
    ) -> Result<Run, EngineError> {
        for attempt in 0..DECIDE_ATTEMPTS {
            if attempt > 0 {
                // Another writer (a run task starting or ending, a replica) moved the run
                // between our read and our commit: let it settle before reading again.
                tokio::time::sleep(decide_backoff(attempt)).await;
            }
            let task = self.task_of(run_id);
            if let Some(task) = task {
                let (reply, answer) = oneshot::channel();
                let sent = task.send(RunMessage::Decide {
                    request: request.clone(),
                    reply,
                });
                if sent.is_ok()
                    && let Ok(result) = answer.await
                {
                    return result;
                }
                // The task ended before it answered: decide from the store instead.
                continue;
            }
            let run = self.store.get_run(run_id).await?;
            let wf = self
                .workflow(&run.workflow_id, run.workflow_version)
                .await?;
            let rev = run.control.rev;
            let mut state = RunState::new(run, wf, &self.settings);
            let children_ended =
                matches!(request, Intervention::Tick) && self.check_children(&mut state).await;
            match state.decide(request.clone()) {
                Ok(()) => {}
                Err(_) if children_ended => {}
                Err(refusal) => return Err(refusal.into()),
            }
            match self.resume_decided(state, rev).await {
                Err(EngineError::Conflict(_)) => continue,
                other => return other,
            }
        }
        Err(EngineError::Conflict(format!(
            "run {run_id} kept changing; try again"
        )))
    }

    /// Commits a decision taken on a run read at revision `rev`, and starts the run here
    /// when it can go on (and this server has room; otherwise it is left for a claim).
    pub(super) async fn resume_decided(
        self: &Arc<Self>,
        mut state: RunState,
        rev: u64,
    ) -> Result<Run, EngineError> {
        let guard = Guard {
            rev: Some(rev),
            ..Guard::default()
        };
        let runs_on = matches!(state.run.status, RunStatus::Running | RunStatus::Pending);
        let permit = if runs_on { self.try_slot() } else { None };
        let owner = match (&permit, runs_on) {
            (Some(_), _) => OwnerChange::Take(self.lease()),
            (None, _) => OwnerChange::Release,
        };
        let Some(tx) = state.pending(guard, owner) else {
            return Ok(state.run);
        };
        let committed = self.commit(tx).await?;
        state.committed(committed.rev, committed.at);
        self.after_commit(&mut state);
        match permit {
            Some(permit) => self.spawn_run(state.run.clone(), permit),
            None if runs_on => self.queue_wake(),
            None => {}
        }
        Ok(state.run)
    }
}

/// How a run's first log entry names what started it.
fn started_by(trigger: Option<&RunTrigger>) -> String {
    match trigger {
        None => String::new(),
        Some(RunTrigger::Schedule { id, fire_time }) => {
            format!(" by schedule {id} (tick {})", fire_time.to_rfc3339())
        }
        Some(RunTrigger::Webhook { name, delivery, .. }) => match delivery {
            Some(d) => format!(" by webhook trigger {name} (delivery {d})"),
            None => format!(" by webhook trigger {name}"),
        },
    }
}

/// How many times a decision is tried against a run that keeps changing under it.
const DECIDE_ATTEMPTS: u32 = 20;

/// How long a read waits for a run's task to hand over its view before reading the store.
const VIEW_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The pause before decision attempt `attempt` (1-based): 2 ms doubling to 200 ms, under
/// 3 s over every attempt, so a run that is starting or finishing elsewhere can settle.
fn decide_backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis((1u64 << attempt.min(8)).min(200))
}
