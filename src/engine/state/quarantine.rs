//! The poison-run quarantine: a step that was in flight when the server died, twice in a
//! row, is not started a third time. It fails for good (never retried) with an error
//! saying so, and the run goes on by its rules, so one definition cannot crash-loop the
//! server.
//!
//! The count lives on the step row and survives the crash; a graceful shutdown, which
//! marks the run left cleanly, is not a death and starts the count again, and so does a
//! step that was only waiting between attempts when the server died.

use super::{RunState, Start};
use crate::model::LogLevel;

/// Deaths in a row with a step in flight after which the step is not resumed again.
pub const MAX_INTERRUPTIONS: u32 = 2;

impl RunState {
    /// Step `idx` was `RUNNING` when the run last stopped: starts it again, or fails it
    /// when the server died while running it [`MAX_INTERRUPTIONS`] times in a row.
    pub(super) fn resume_step(&mut self, idx: usize) -> Option<Start> {
        let n = self.run.steps[idx].attempts.len() as u32 + 1;
        if self.run.control.left_cleanly || self.was_waiting(idx) {
            if self.run.steps[idx].interruptions > 0 {
                self.run.steps[idx].interruptions = 0;
                self.touch_step(idx);
            }
            let message = format!("step was in flight at a restart; attempt {n} starts again");
            self.log(LogLevel::Warn, Some(idx), message);
            return self.prepare(idx);
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
        let message = format!(
            "the server stopped while this step was in flight ({times} time(s) in a row); \
             attempt {n} starts again"
        );
        self.log(LogLevel::Warn, Some(idx), message);
        self.prepare(idx)
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
