//! Starting a finished run again (see [`crate::engine::rerun`] for what is reset and why):
//! the run goes back to `RUNNING` with its history grown by one record, the reset steps
//! back to `PENDING`, and its clock for `timeout_ms` at zero.

use super::RunState;
use crate::model::{LogLevel, RetryRecord, RunStatus, StepStatus};

impl RunState {
    /// Applies a re-run whose reset steps are already pending in `self.run.steps` (as
    /// they were before is in `record`). The run's status and times change here.
    pub fn rerun(&mut self, reset: &[usize], record: RetryRecord) {
        let version = if record.version == record.from_version {
            String::new()
        } else {
            format!(
                " on version {} (was {})",
                record.version, record.from_version
            )
        };
        let reason = record
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let message = format!(
            "re-run {} requested by {} from step {:?}{version}{reason}",
            record.n, record.by, record.from_step
        );
        let n = record.n;
        self.run.retries.push(record);
        self.touch_rerun();
        self.run.error = None;
        self.run.finished_at = None;
        self.run.control.active_ms = 0;
        self.run.control.wake_at = None;
        self.set_run(RunStatus::Running, LogLevel::Info, message);
        self.run.started_at = Some(self.now());
        self.event("run.retried", None, RunStatus::Running.as_str());
        for &idx in reset {
            self.set_step(
                idx,
                StepStatus::Pending,
                LogLevel::Info,
                format!("reset for re-run {n}"),
            );
        }
    }
}
