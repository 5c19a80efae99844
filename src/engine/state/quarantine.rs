//! The poison-run quarantine: a step that was in flight when the server died, twice in a
//! row, is not started a third time. It fails for good (never retried) with an error
//! saying so, and the run goes on by its rules, so one definition cannot crash-loop the
//! server.
//!
//! The count lives on the step row and survives the crash; a graceful shutdown, which
//! marks the run left cleanly, is not a death and starts the count again, and so do a
//! step that was only waiting between attempts when the server died and an attempt that
//! finished (the server survived it).

use super::{RunState, Start};
use crate::model::{LogLevel, StepStatus};

/// Deaths in a row with a step in flight after which the step is not resumed again.
pub const MAX_INTERRUPTIONS: u32 = 2;

impl RunState {
    /// Step `idx` was `RUNNING` when the run last stopped: starts it again (a `foreach`
    /// step: its items that were in flight), or fails it when the server died while running
    /// it [`MAX_INTERRUPTIONS`] times in a row.
    pub(super) fn resume_step(&mut self, idx: usize) -> Option<Start> {
        let foreach = self.wf.steps[idx].foreach.is_some();
        let n = self.run.steps[idx].attempts.len() as u32 + 1;
        let in_flight = if foreach {
            self.items_in_flight(idx)
        } else {
            !self.was_waiting(idx)
        };
        if self.run.control.left_cleanly || !in_flight {
            if self.run.steps[idx].interruptions > 0 {
                self.run.steps[idx].interruptions = 0;
                self.touch_step(idx);
            }
            return self.start_again(
                idx,
                foreach,
                format!("step was in flight at a restart; attempt {n} starts again"),
            );
        }
        let step = &mut self.run.steps[idx];
        step.interruptions += 1;
        let times = step.interruptions;
        self.touch_step(idx);
        if times >= MAX_INTERRUPTIONS {
            let error = format!(
                "the server stopped while running this step {times} times; \
                 it is not started again"
            );
            self.fail_step(idx, None, error, None);
            return None;
        }
        self.start_again(
            idx,
            foreach,
            format!(
                "the server stopped while this step was in flight ({times} time(s) in a row); \
             attempt {n} starts again"
            ),
        )
    }

    /// An attempt of step `idx` (or of one of its items) finished: the server survived it,
    /// so the deaths in a row count from zero again. The caller records the step.
    pub(super) fn survived(&mut self, idx: usize) {
        self.run.steps[idx].interruptions = 0;
    }

    /// Starts step `idx` again after a restart, saying why (a `foreach` step says it
    /// itself, with its items).
    fn start_again(&mut self, idx: usize, foreach: bool, message: String) -> Option<Start> {
        if foreach {
            self.resume_foreach(idx);
            return None;
        }
        self.log(LogLevel::Warn, Some(idx), message);
        self.prepare(idx)
    }

    /// True when some item of `foreach` step `idx` was running.
    fn items_in_flight(&self, idx: usize) -> bool {
        self.run.steps[idx]
            .items
            .as_ref()
            .is_some_and(|items| items.iter().any(|i| i.status == StepStatus::Running))
    }

    /// True when step `idx` was only waiting for its next attempt (its retry time is
    /// still ahead), so no call of it was running when the server stopped.
    fn was_waiting(&self, idx: usize) -> bool {
        self.run.steps[idx].attempts.last().is_some_and(|a| {
            let (Some(finished), Some(delay)) = (a.finished_at, a.retry_in_ms) else {
                return false;
            };
            finished + chrono::Duration::milliseconds(delay as i64) > self.now()
        })
    }
}
