//! The task that executes one run: it owns the run's [`RunState`] while the run is
//! `RUNNING` on this server, starts steps, applies their results, and commits every change
//! before anyone can see it.
//!
//! The task ends when the run parks for approval, finishes, is decided by someone else
//! (its guarded commit conflicts), or the server shuts down. A parked or finished run holds
//! no task and no memory here.
//!
//! Shutdown drains: from the moment the server starts to stop, no step is started; the
//! steps in flight get `shutdown_grace` to finish and their results are committed as
//! usual. Then the run ends or parks if that is where it got to; otherwise it is left
//! `RUNNING` with its lease released, and the steps cut off run again (same idempotency
//! key) after the next start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::EngineError;
use super::attempts::{self, StepEvent, StepPlan};
use super::decide::Intervention;
use super::lease::Fence;
use super::shared::Shared;
use super::state::{Phase, RunState, Start, count_tokens};
use super::views::{RunPieces, RunView};
use crate::actions::{Effect, Failure, Outcome, Parking};
use crate::model::{Attempt, LogLevel, Run, RunStatus};
use crate::outbound::Backoff;
use crate::store::{Guard, OwnerChange};

/// A message to a run's task.
pub enum RunMessage {
    Decide {
        request: Intervention,
        reply: oneshot::Sender<Result<Run, EngineError>>,
    },
    /// Another server committed revision `rev` of this run (a store notice).
    Refresh { rev: u64 },
    /// The run's lease is no longer confirmed (a renewal missed it): check whether the
    /// run is still this server's.
    Revalidate,
    /// A reader wants the run as committed: answered with its view when everything the
    /// task recorded is committed, `None` while something is not.
    View {
        reply: oneshot::Sender<Option<Arc<RunView>>>,
    },
}

/// How a run's task ended.
enum Exit {
    /// Parked, finished, or decided elsewhere: nothing more to do here.
    Released,
    /// The server is stopping; the run stays `RUNNING`, unowned, and resumes on the next
    /// start.
    Shutdown,
}

/// A commit that only records the progress of `foreach` items waits for this many of
/// them, or for [`ITEM_FLUSH`], whichever comes first.
const ITEM_BATCH: usize = 100;
const ITEM_FLUSH: Duration = Duration::from_millis(200);

/// A step in flight: its index, and its item when it is one item of a `foreach` step.
type Slot = (usize, Option<usize>);

struct Runner {
    shared: Arc<Shared>,
    state: RunState,
    tasks: JoinSet<()>,
    in_flight: HashMap<Slot, AbortHandle>,
    events_tx: mpsc::UnboundedSender<StepEvent>,
    events: mpsc::UnboundedReceiver<StepEvent>,
    inbox: mpsc::UnboundedReceiver<RunMessage>,
    since: Instant,
    /// The run's first start here, to be counted once it is committed.
    starting: bool,
    /// Calls start only while this says the lease is ours.
    fence: Arc<Fence>,
    /// When the last commit was made (item progress waits at most [`ITEM_FLUSH`]).
    last_commit: Instant,
    /// The run's members as served, for its view while someone reads it.
    pieces: RunPieces,
}

/// Executes run `run_id` until it leaves this server. `run` is the run when the caller
/// already holds it. The permit bounds runs executing at once.
pub async fn drive(
    shared: Arc<Shared>,
    run_id: String,
    run: Option<Run>,
    inbox: mpsc::UnboundedReceiver<RunMessage>,
    permit: OwnedSemaphorePermit,
) {
    // Every line logged while this run executes carries its id (steps add `step`).
    let span = tracing::info_span!("run", run_id = %run_id);
    let outcome = async {
        let run = match run {
            Some(run) => run,
            None => shared.store.get_run(&run_id).await?,
        };
        let wf = shared
            .workflow(&run.workflow_id, run.workflow_version)
            .await?;
        let state = RunState::new(run, wf, &shared.settings);
        let (events_tx, events) = mpsc::unbounded_channel();
        let runner = Runner {
            shared: shared.clone(),
            state,
            tasks: JoinSet::new(),
            in_flight: HashMap::new(),
            events_tx,
            events,
            inbox,
            since: Instant::now(),
            starting: false,
            fence: shared.fences.of(&run_id),
            last_commit: Instant::now(),
            pieces: RunPieces::default(),
        };
        runner.run().await
    }
    .instrument(span.clone())
    .await;
    let _entered = span.enter();
    match outcome {
        Ok(Exit::Released) => {}
        Ok(Exit::Shutdown) => tracing::info!(run_id, "run left running for the next start"),
        Err(EngineError::Conflict(reason)) => {
            tracing::info!(run_id, %reason, "run decided elsewhere")
        }
        Err(e) => tracing::error!(run_id, error = %e, "run task stopped"),
    }
    // The slot is free before the claim loop is woken, so that it sees the room.
    drop(permit);
    shared.task_ended(&run_id);
}

impl Runner {
    async fn run(mut self) -> Result<Exit, EngineError> {
        if self.shared.shutdown.is_cancelled() {
            // Claimed or created as the server began to stop: leave it for the next start.
            self.commit(OwnerChange::Release).await?;
            return Ok(Exit::Shutdown);
        }
        let owner = self.shared.owner.clone();
        self.starting = self.state.run.status == RunStatus::Pending;
        let resumed = self.state.begin(&owner);
        if !resumed.is_empty() {
            // Steps cut off by a restart are marked resumed before they are called again;
            // otherwise the first pass of the loop commits the start with the first steps.
            self.commit(OwnerChange::Keep).await?;
            self.spawn(resumed);
        }
        let deadline = self.run_deadline();
        // Set when the server starts to stop: when steps in flight are cut off.
        let mut drain: Option<Instant> = None;
        loop {
            // Checked here too, not only in the select below: a step that gave up waiting
            // for its next attempt may be reported before the select sees the cancel.
            if drain.is_none() && self.shared.shutdown.is_cancelled() {
                drain = Some(self.begin_drain());
            }
            let starts = match drain {
                None => self.state.schedule(),
                Some(_) => Vec::new(),
            };
            // When the run parks or ends here, the step results that got it there are
            // committed together with that, in one commit rather than two.
            let phase = self.state.phase(self.in_flight.len() + starts.len());
            let over = self.state.failure.is_some() || self.state.stopped_by.is_some();
            if drain.is_some() && phase != Phase::Busy && !over && self.state.can_progress() {
                return self
                    .leave("server shutting down: the run resumes on the next start")
                    .await;
            }
            // Set while item progress waits to be committed with more.
            let flush = match phase {
                Phase::Busy => {
                    let batching = self.state.only_items_below(ITEM_BATCH)
                        && self.last_commit.elapsed() < ITEM_FLUSH;
                    let flush = if batching {
                        Some(self.last_commit + ITEM_FLUSH)
                    } else {
                        self.commit(OwnerChange::Keep).await?;
                        None
                    };
                    self.spawn(starts);
                    flush
                }
                Phase::Park => {
                    self.account_time();
                    self.state.park();
                    self.commit(OwnerChange::Release).await?;
                    return Ok(Exit::Released);
                }
                Phase::Done(status, error) => {
                    self.account_time();
                    self.state.finish(status, error);
                    self.commit(OwnerChange::Release).await?;
                    return Ok(Exit::Released);
                }
            };
            let wake = self.wake_instant();
            tokio::select! {
                Some(event) = self.events.recv() => {
                    self.apply(event).await;
                    while let Ok(event) = self.events.try_recv() {
                        self.apply(event).await;
                    }
                    self.drop_unwanted_items();
                    self.stop_branches_if_over();
                }
                _ = sleep_until(wake) => {
                    self.shared.check_children(&mut self.state).await;
                    let _ = self.state.decide(Intervention::Tick);
                }
                Some(message) = self.inbox.recv() => {
                    if self.receive(message).await? {
                        return Ok(Exit::Released);
                    }
                }
                _ = sleep_until(flush) => {}
                _ = sleep_until(deadline) => {
                    self.tasks.abort_all();
                    self.in_flight.clear();
                    self.state.time_out_run();
                }
                _ = self.shared.shutdown.cancelled(), if drain.is_none() => {
                    drain = Some(self.begin_drain());
                }
                _ = sleep_until(drain) => {
                    let message = format!(
                        "server shutting down: {} step(s) still in flight after shutdown_grace; they run again after the next start",
                        self.in_flight.len()
                    );
                    return self.leave(&message).await;
                }
            }
        }
    }

    /// Starts draining: no step starts from now on; returns when the steps in flight are
    /// cut off.
    fn begin_drain(&mut self) -> Instant {
        let grace = self.shared.settings.shutdown_grace;
        let message = format!(
            "server shutting down: waiting up to {} ms for {} step(s) in flight; no new steps start",
            grace.as_millis(),
            self.in_flight.len()
        );
        self.state.log(LogLevel::Warn, None, message);
        Instant::now() + grace
    }

    /// Leaves the run `RUNNING` for the next start: steps still in flight are dropped (they
    /// stay `RUNNING` in the store and are attempted again) and the lease is released with
    /// the run marked left cleanly (a graceful stop is not a crash for the quarantine).
    async fn leave(&mut self, message: &str) -> Result<Exit, EngineError> {
        self.tasks.abort_all();
        self.in_flight.clear();
        self.account_time();
        self.state.log(LogLevel::Warn, None, message);
        self.commit(OwnerChange::Leave).await?;
        Ok(Exit::Shutdown)
    }

    /// When the run-level `timeout_ms` runs out (time parked for approval not counted).
    fn run_deadline(&self) -> Option<Instant> {
        Some(self.since + self.state.time_left()?)
    }

    fn account_time(&mut self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.since = Instant::now();
        self.state.add_active(ms);
    }

    fn spawn(&mut self, starts: Vec<Start>) {
        for start in starts {
            let step = &self.state.wf.steps[start.index];
            let plan = StepPlan {
                action: self.shared.actions.get_or_unknown(&step.action_name),
                sandbox: self.shared.sandbox.clone(),
                retry: step.retry.clone(),
                timeout: step.timeout,
                metrics: self.shared.metrics.step(&step.action_name),
                max_output_bytes: self.shared.settings.limits.max_output_bytes,
                fence: self.fence.clone(),
            };
            let slot = (start.index, start.item);
            // A debug span: where debug lines are off it costs nothing (at info it was ~2 %
            // of a step's instructions), and the one line above debug a step's attempts
            // write (an outbound call denied) names its call, `<run id>/<step>`, itself.
            let span = tracing::debug_span!(
                "step",
                run_id = %self.state.run.id,
                step = %start.call.step,
                action = %step.action_name,
            );
            let handle = self.tasks.spawn(
                attempts::run(
                    plan,
                    start,
                    self.events_tx.clone(),
                    self.shared.shutdown.clone(),
                )
                .instrument(span),
            );
            self.in_flight.insert(slot, handle);
        }
    }

    /// When a waiting step of this run must be looked at (a timer, a timeout, a check of a
    /// child run), as an instant of this task's clock.
    fn wake_instant(&self) -> Option<Instant> {
        let at = self.state.next_wake()?;
        let wait = (at - self.state.now()).to_std().unwrap_or_default();
        Some(Instant::now() + wait)
    }

    async fn apply(&mut self, event: StepEvent) {
        match event {
            StepEvent::Retrying {
                index,
                item: None,
                attempt,
                response,
            } => self.state.on_retry(index, attempt, response),
            StepEvent::Retrying {
                index,
                item: Some(item),
                attempt,
                response,
            } => self.state.on_item_retry(index, item, attempt, response),
            StepEvent::Done {
                index,
                item,
                attempt,
                result,
            } => {
                self.in_flight.remove(&(index, item));
                count_tokens(&self.shared.metrics, &self.state.wf.name, &result);
                match (item, *result) {
                    (Some(item), result) => self.state.on_item_done(index, item, attempt, result),
                    (
                        None,
                        Ok(Outcome {
                            effect:
                                Effect::Park(Parking::Child {
                                    workflow_id,
                                    version,
                                    context,
                                }),
                            output,
                            ..
                        }),
                    ) => {
                        let started = self
                            .shared
                            .start_child(
                                &self.state.run,
                                index,
                                &attempt,
                                &workflow_id,
                                version,
                                context,
                            )
                            .await;
                        self.child_started(index, attempt, output, &workflow_id, started);
                    }
                    (None, result) => self.state.on_done(index, attempt, result),
                }
            }
            StepEvent::Paused { index, item } => {
                self.in_flight.remove(&(index, item));
            }
            StepEvent::Skipped {
                index,
                item: None,
                reason,
            } => {
                self.in_flight.remove(&(index, None));
                self.state.on_skipped(index, reason);
            }
            StepEvent::Skipped {
                index,
                item: Some(item),
                ..
            } => {
                self.in_flight.remove(&(index, Some(item)));
                let attempt = Attempt {
                    attempt: 0,
                    started_at: self.state.now(),
                    finished_at: None,
                    error: None,
                    http_code: None,
                    retry_in_ms: None,
                };
                let skipped = Ok(Outcome::output(serde_json::Value::Null));
                self.state.on_item_done(index, item, attempt, skipped);
            }
            StepEvent::Unrendered { index, item, error } => {
                self.in_flight.remove(&(index, item));
                match item {
                    Some(item) => self.state.item_failed(index, item, error, None),
                    None => self.state.on_unrendered(index, error),
                }
            }
        }
        while self.tasks.try_join_next().is_some() {}
    }

    /// Records the child run a `workflow` step started, or fails the step when it could
    /// not start one.
    fn child_started(
        &mut self,
        index: usize,
        attempt: Attempt,
        output: serde_json::Value,
        workflow_id: &str,
        started: Result<String, String>,
    ) {
        match started {
            Ok(child) => {
                self.state
                    .on_done(index, attempt, Ok(Outcome::output(output)));
                self.state.wait_for_child(index, child);
            }
            Err(why) => {
                let failure =
                    Failure::rejected(format!("cannot start workflow {workflow_id}: {why}"));
                self.state.on_done(index, attempt, Err(failure));
            }
        }
    }

    /// Drops the calls of items whose step ended (an item failed and canceled the rest).
    fn drop_unwanted_items(&mut self) {
        let unwanted: Vec<Slot> = self
            .in_flight
            .keys()
            .copied()
            .filter(|&(idx, item)| item.is_some_and(|i| !self.state.item_wanted(idx, i)))
            .collect();
        for slot in unwanted {
            if let Some(handle) = self.in_flight.remove(&slot) {
                handle.abort();
            }
        }
    }

    /// After a failure or a condition stop, branches still in flight are canceled (but not
    /// `always_run` steps, which run whatever happened).
    fn stop_branches_if_over(&mut self) {
        let reason = match (&self.state.failure, &self.state.stopped_by) {
            (Some(error), _) => error.clone(),
            (None, Some(by)) => format!("condition {by:?} stopped the run"),
            (None, None) => return,
        };
        let stopping: Vec<Slot> = self
            .in_flight
            .keys()
            .copied()
            .filter(|&(i, _)| !self.state.wf.steps[i].always_run)
            .collect();
        for (idx, item) in stopping {
            if let Some(handle) = self.in_flight.remove(&(idx, item)) {
                handle.abort();
            }
            self.state.cancel_step(idx, &reason);
        }
    }

    /// Handles a message sent to this task; true when the run has left this server.
    async fn receive(&mut self, message: RunMessage) -> Result<bool, EngineError> {
        let (request, reply) = match message {
            RunMessage::Decide { request, reply } => (request, reply),
            RunMessage::Refresh { rev } => return Ok(self.changed_elsewhere(rev).await),
            RunMessage::Revalidate => return Ok(self.changed_elsewhere(u64::MAX).await),
            RunMessage::View { reply } => {
                let view = self
                    .state
                    .is_committed()
                    .then(|| Arc::new(self.pieces.view(&self.state.run)));
                let _ = reply.send(view);
                return Ok(false);
            }
        };
        if matches!(request, Intervention::Cancel { .. }) && !self.state.run.status.is_terminal() {
            self.tasks.abort_all();
            self.in_flight.clear();
        }
        if let Err(refusal) = self.state.decide(request) {
            let _ = reply.send(Err(refusal.into()));
            return Ok(false);
        }
        let over = self.state.run.status.is_terminal();
        if over {
            self.account_time();
        }
        let owner = if over {
            OwnerChange::Release
        } else {
            OwnerChange::Keep
        };
        let committed = self.commit(owner).await;
        let _ = reply.send(committed.clone().map(|()| self.state.run.clone()));
        committed.map(|()| over)
    }

    /// True (after aborting in-flight calls) when another server really changed the run
    /// past what this task committed: it was canceled or taken over there, so it is no
    /// longer this task's to drive, and its next guarded commit would fail anyway.
    async fn changed_elsewhere(&mut self, rev: u64) -> bool {
        let ours = self.state.run.control.rev;
        if rev <= ours {
            return false;
        }
        let stored = match self.shared.store.get_run(&self.state.run.id).await {
            Ok(run) => run,
            Err(_) => return false,
        };
        if stored.control.rev <= ours {
            return false;
        }
        self.tasks.abort_all();
        self.in_flight.clear();
        tracing::info!(
            run_id = %self.state.run.id,
            status = %stored.status,
            "run changed by another server; stopping here"
        );
        true
    }

    /// Commits what the state recorded; transient store errors are retried until the
    /// store is back or the server stops, so no change of a live run is dropped.
    async fn commit(&mut self, owner: OwnerChange) -> Result<(), EngineError> {
        let guard = Guard {
            rev: None,
            owner: Some(self.shared.owner.clone()),
            status_in: Some(vec![RunStatus::Pending, RunStatus::Running]),
        };
        let owner = match owner {
            OwnerChange::Keep => OwnerChange::Renew(self.shared.settings.lease_ttl),
            other => other,
        };
        let backoff = Backoff::doubling(Duration::from_millis(50), Duration::from_secs(5));
        let mut failures = 0;
        loop {
            let Some(tx) = self.state.pending(guard.clone(), owner.clone()) else {
                return Ok(());
            };
            let sent = Instant::now();
            match self.shared.commit(tx).await {
                Ok(committed) => {
                    // The guard named this server: the run was ours when it was sent.
                    self.fence.prove(sent);
                    self.last_commit = Instant::now();
                    let (steps, context, all) = self.state.rewritten();
                    self.pieces.changed(steps, context, all);
                    self.state.committed(committed.rev, committed.at);
                    self.shared.publish_view(&self.state.run, &mut self.pieces);
                    if std::mem::take(&mut self.starting) {
                        self.shared.metrics.run_started();
                    }
                    self.shared.after_commit(&mut self.state);
                    return Ok(());
                }
                Err(e) if e.is_unavailable() && !self.shared.shutdown.is_cancelled() => {
                    let reason = crate::problems::chain(&e);
                    tracing::warn!(run_id = %self.state.run.id, %reason, "commit failed; retrying");
                    failures += 1;
                    tokio::time::sleep(backoff.delay(failures)).await;
                }
                Err(e) => {
                    self.tasks.abort_all();
                    return Err(e.into());
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
