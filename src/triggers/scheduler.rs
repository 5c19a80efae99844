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

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cron::CronSchedule;
use crate::engine::{Engine, EngineError, Intervention, StartRun};
use crate::metrics::Metrics;
use crate::model::{RunTrigger, Timestamp, now};
use crate::store::{DynStore, Overlap, Schedule, ScheduleFire};

/// Schedules read per pass; a full pass is followed by another at once.
const BATCH: usize = 100;

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
        loop {
            let at = now();
            let mut full = false;
            match self.store.due_schedules(at, BATCH).await {
                Ok(due) => {
                    full = due.len() == BATCH;
                    for schedule in due {
                        if stop.is_cancelled() {
                            return;
                        }
                        self.fire(schedule, at, first).await;
                    }
                    first = false;
                }
                Err(e) => tracing::warn!(error = %e, "reading due schedules failed"),
            }
            let pause = if full {
                Duration::ZERO
            } else {
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
    async fn fire(&self, schedule: Schedule, at: Timestamp, first: bool) {
        let Some(tick) = schedule.next_fire_at else {
            return;
        };
        let id = schedule.id.as_str();
        let cron = match CronSchedule::parse(&schedule.cron, &schedule.timezone) {
            Ok(cron) => cron,
            Err(e) => {
                tracing::warn!(schedule = id, error = %e, "schedule can no longer fire; pausing it");
                self.advance(id, tick, None, "failed").await;
                return;
            }
        };
        let late = (at - tick).to_std().unwrap_or_default() > self.settings.misfire_grace;
        let (fire_time, stands_for) = if first || late {
            cron.latest_due(tick, at).unwrap_or((tick, 1))
        } else {
            (tick, 1)
        };
        let next = cron.next_after(fire_time);
        if !self.may_start(&schedule, tick, next).await {
            return;
        }
        let request = StartRun {
            workflow_id: schedule.workflow_id.clone(),
            version: None,
            context: schedule.context.clone(),
            idempotency: None,
            trigger: Some(RunTrigger::Schedule {
                id: id.to_owned(),
                fire_time,
            }),
            schedule: Some(ScheduleFire {
                schedule_id: id.to_owned(),
                claim: Some((tick, next)),
                fire_time,
            }),
        };
        match self.engine.start_run(request).await {
            Ok((run, _)) => {
                tracing::info!(schedule = id, run_id = run.id, fire_time = %fire_time.to_rfc3339(), "schedule fired");
                self.metrics.schedule_fires("fired", 1);
                if stands_for > 1 {
                    self.metrics.schedule_fires("missed", stands_for - 1);
                }
            }
            Err(EngineError::Store(e)) => {
                tracing::warn!(schedule = id, error = %e, "firing a schedule failed; will retry");
            }
            Err(e) => {
                // Lost the claim to another server, or no run can start (the workflow is
                // gone or invalid): the tick is over either way.
                if self
                    .store
                    .get_schedule(id)
                    .await
                    .is_ok_and(|s| s.next_fire_at == Some(tick))
                {
                    tracing::warn!(schedule = id, error = %e, "schedule tick failed to start a run");
                    self.advance(id, tick, next, "failed").await;
                }
            }
        }
    }

    /// Applies the overlap policy: false when the tick is skipped (or the previous run
    /// could not be checked).
    async fn may_start(&self, s: &Schedule, tick: Timestamp, next: Option<Timestamp>) -> bool {
        let Some(previous) = s.last_run_id.as_deref() else {
            return true;
        };
        if s.overlap == Overlap::Allow {
            return true;
        }
        let active = match self.engine.get_run(previous).await {
            Ok(run) => !run.status.is_terminal(),
            Err(EngineError::NotFound(_)) => false,
            Err(e) => {
                tracing::warn!(schedule = s.id, error = %e, "reading the previous run failed");
                return false;
            }
        };
        if !active {
            return true;
        }
        match s.overlap {
            Overlap::Skip => {
                self.advance(&s.id, tick, next, "skipped").await;
                false
            }
            _ => {
                let by = format!("schedule {}", s.id);
                match self
                    .engine
                    .decide(previous, Intervention::Cancel { by })
                    .await
                {
                    Ok(_) | Err(EngineError::Conflict(_)) | Err(EngineError::NotFound(_)) => true,
                    Err(e) => {
                        tracing::warn!(schedule = s.id, error = %e, "canceling the previous run failed");
                        false
                    }
                }
            }
        }
    }

    /// Moves past tick `tick` without a run, counting it under `outcome` when this server
    /// was the one that moved it.
    async fn advance(&self, id: &str, tick: Timestamp, next: Option<Timestamp>, outcome: &str) {
        match self.store.advance_schedule(id, tick, next).await {
            Ok(true) => {
                tracing::info!(schedule = id, tick = %tick.to_rfc3339(), outcome, "schedule tick passed without a run");
                self.metrics.schedule_fires(outcome, 1);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(schedule = id, error = %e, "advancing a schedule failed"),
        }
    }
}
