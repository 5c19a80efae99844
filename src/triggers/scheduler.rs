//! The schedule loop: fires every due tick of every schedule, on whichever replica gets
//! there first.
//!
//! Each pass reads the schedules due now from the store and fires each through
//! [`Engine::start_run`], whose commit claims the tick (a compare-and-set of the
//! schedule's `next_fire_at`, see `store::triggers`). Replicas race for a tick and exactly
//! one commit wins; the others hear `Conflict` and move on. A crash before the commit
//! leaves the tick due, so the next pass (here or elsewhere) fires it; after the commit
//! the run exists and the tick has moved, so nothing fires twice.
//!
//! Late ticks: a tick more than `triggers.misfire_grace` late, and every due tick on this
//! server's first pass (ticks missed while no server ran), is coalesced with the ticks
//! after it: only the latest due one fires, and the others count as `missed`.
//!
//! A tick that could not be settled (the store failed mid-way) stays due; the loop then
//! waits a growing delay (up to the poll interval) before the next pass instead of
//! retrying at once, so a failing store is not hammered by a due tick.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cron::CronSchedule;
use crate::engine::{Engine, EngineError, Intervention, StartRun};
use crate::metrics::Metrics;
use crate::model::{RunTrigger, Timestamp, now};
use crate::store::{DynStore, Overlap, Schedule, ScheduleFire, StoreError};

/// Schedules read per pass; a full pass is followed by another at once.
const BATCH: usize = 100;

/// The first delay after a pass that left a tick unsettled; it doubles up to the poll
/// interval while passes keep failing.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// How one due tick ended on this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Fired, skipped, or moved on by another server: nothing left to do.
    Done,
    /// The store failed before the tick was settled: it is still due.
    Retry,
}

/// How the loop runs (`triggers:` in the config).
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// The longest the loop sleeps: how soon schedules changed on another replica are seen.
    pub poll_interval: Duration,
    /// A tick later than this is coalesced with the ticks after it.
    pub misfire_grace: Duration,
}

/// The running schedule loop; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    wake: Arc<Notify>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Scheduler {
    /// Starts the loop. Must be called within a Tokio runtime.
    pub fn start(
        store: DynStore,
        engine: Engine,
        metrics: Arc<Metrics>,
        settings: SchedulerSettings,
    ) -> Self {
        let scheduler = Self {
            wake: Arc::new(Notify::new()),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let pass = Pass {
            store,
            engine,
            metrics,
            settings,
        };
        let (wake, stop) = (scheduler.wake.clone(), scheduler.stop.clone());
        scheduler.tasks.spawn(pass.run(wake, stop));
        scheduler.tasks.close();
        scheduler
    }

    /// Looks at the schedules again now (one was created, changed or resumed here).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops firing; a pass in progress finishes the tick it is on.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

struct Pass {
    store: DynStore,
    engine: Engine,
    metrics: Arc<Metrics>,
    settings: SchedulerSettings,
}

impl Pass {
    async fn run(self, wake: Arc<Notify>, stop: CancellationToken) {
        let mut first = true;
        let mut retry = FIRST_RETRY;
        loop {
            let at = now();
            let mut full = false;
            let mut unsettled = false;
            match self.store.due_schedules(at, BATCH).await {
                Ok(due) => {
                    full = due.len() == BATCH;
                    for schedule in due {
                        if stop.is_cancelled() {
                            return;
                        }
                        unsettled |= self.fire(schedule, at, first).await == Settled::Retry;
                    }
                    first = false;
                }
                Err(e) => tracing::warn!(error = %e, "reading due schedules failed"),
            }
            let pause = if unsettled {
                let pause = retry.min(self.settings.poll_interval);
                retry = retry.saturating_mul(2);
                pause
            } else if full {
                retry = FIRST_RETRY;
                Duration::ZERO
            } else {
                retry = FIRST_RETRY;
                self.until_next_tick().await
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = wake.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// How long until the earliest tick, at most the poll interval.
    async fn until_next_tick(&self) -> Duration {
        let poll = self.settings.poll_interval;
        match self.store.next_schedule_tick().await {
            Ok(Some(tick)) => (tick - now()).to_std().unwrap_or(Duration::ZERO).min(poll),
            Ok(None) => poll,
            Err(e) => {
                tracing::warn!(error = %e, "reading the next schedule tick failed");
                poll
            }
        }
    }

    /// Fires the due tick of `schedule` (or the latest, when it is late), by its overlap
    /// policy.
    async fn fire(&self, schedule: Schedule, at: Timestamp, first: bool) -> Settled {
        let Some(tick) = schedule.next_fire_at else {
            return Settled::Done;
        };
        let id = schedule.id.as_str();
        let cron = match CronSchedule::parse(&schedule.cron, &schedule.timezone) {
            Ok(cron) => cron,
            Err(e) => {
                tracing::warn!(schedule = id, error = %e, "schedule can no longer fire; pausing it");
                return self.advance(id, tick, None, "failed").await;
            }
        };
        let late = (at - tick).to_std().unwrap_or_default() > self.settings.misfire_grace;
        let (fire_time, stands_for) = if first || late {
            cron.latest_due(tick, at).unwrap_or((tick, 1))
        } else {
            (tick, 1)
        };
        let next = cron.next_after(fire_time);
        match self.may_start(&schedule, tick, next).await {
            Overlapping::Start => {}
            Overlapping::Skipped(settled) => return settled,
        }
        match self
            .engine
            .start_run(run_of(&schedule, fire_time, Some((tick, next))))
            .await
        {
            Ok((run, _)) => {
                tracing::info!(schedule = id, run_id = run.id, fire_time = %fire_time.to_rfc3339(), "schedule fired");
                self.metrics.schedule_fires("fired", 1);
                if stands_for > 1 {
                    self.metrics.schedule_fires("missed", stands_for - 1);
                }
                Settled::Done
            }
            Err(EngineError::Store(e)) => {
                tracing::warn!(schedule = id, error = %e, "firing a schedule failed; will retry");
                Settled::Retry
            }
            Err(e) => {
                // Lost the claim to another server, or no run can start (the workflow is
                // gone or invalid): the tick is over either way.
                match self.store.get_schedule(id).await {
                    Ok(s) if s.next_fire_at == Some(tick) => {
                        tracing::warn!(schedule = id, error = %e, "schedule tick failed to start a run");
                        self.advance(id, tick, next, "failed").await
                    }
                    Ok(_) | Err(StoreError::NotFound(_)) => Settled::Done,
                    Err(_) => Settled::Retry,
                }
            }
        }
    }

    /// Applies the overlap policy: whether the tick may start its run, or how it ended
    /// without one (skipped, or left due when the previous run could not be checked).
    async fn may_start(
        &self,
        s: &Schedule,
        tick: Timestamp,
        next: Option<Timestamp>,
    ) -> Overlapping {
        let Some(previous) = s.last_run_id.as_deref() else {
            return Overlapping::Start;
        };
        if s.overlap == Overlap::Allow {
            return Overlapping::Start;
        }
        let active = match self.engine.get_run(previous).await {
            Ok(run) => !run.status.is_terminal(),
            Err(EngineError::NotFound(_)) => false,
            Err(e) => {
                tracing::warn!(schedule = s.id, error = %e, "reading the previous run failed");
                return Overlapping::Skipped(Settled::Retry);
            }
        };
        if !active {
            return Overlapping::Start;
        }
        match s.overlap {
            Overlap::Skip => Overlapping::Skipped(self.advance(&s.id, tick, next, "skipped").await),
            _ => {
                let by = format!("schedule {}", s.id);
                match self
                    .engine
                    .decide(previous, Intervention::Cancel { by })
                    .await
                {
                    Ok(_) | Err(EngineError::Conflict(_)) | Err(EngineError::NotFound(_)) => {
                        Overlapping::Start
                    }
                    Err(e) => {
                        tracing::warn!(schedule = s.id, error = %e, "canceling the previous run failed");
                        Overlapping::Skipped(Settled::Retry)
                    }
                }
            }
        }
    }

    /// Moves past tick `tick` without a run, counting it under `outcome` when this server
    /// was the one that moved it.
    async fn advance(
        &self,
        id: &str,
        tick: Timestamp,
        next: Option<Timestamp>,
        outcome: &str,
    ) -> Settled {
        match self.store.advance_schedule(id, tick, next).await {
            Ok(true) => {
                tracing::info!(schedule = id, tick = %tick.to_rfc3339(), outcome, "schedule tick passed without a run");
                self.metrics.schedule_fires(outcome, 1);
                Settled::Done
            }
            Ok(false) => Settled::Done,
            Err(e) => {
                tracing::warn!(schedule = id, error = %e, "advancing a schedule failed");
                Settled::Retry
            }
        }
    }
}

/// What the overlap policy decided for a tick.
enum Overlapping {
    Start,
    /// No run for this tick now: skipped (`Done`), or to be tried again (`Retry`).
    Skipped(Settled),
}
/// The run a schedule starts for its tick at `fire_time`, claiming `claim` (the tick and
/// the one after it) in the run's commit; `None` claims nothing (a manual trigger).
pub fn run_of(
    schedule: &Schedule,
    fire_time: Timestamp,
    claim: Option<(Timestamp, Option<Timestamp>)>,
) -> StartRun {
    StartRun {
        workflow_id: schedule.workflow_id.clone(),
        version: None,
        context: schedule.context.clone(),
        idempotency: None,
        parent: None,
        trigger: Some(RunTrigger::Schedule {
            id: schedule.id.clone(),
            fire_time,
        }),
        schedule: Some(ScheduleFire {
            schedule_id: schedule.id.clone(),
            claim,
            fire_time,
        }),
    }
}
