//! The lifecycle rules of a run: which steps start, are skipped, wait for approval or are
//! failed by their templates; when the run parks, ends, or has run out of time.
//!
//! A step runs when all its parents are finished and none failed (a parent that failed
//! with `on_failure: continue` counts as done). When every parent was skipped it is
//! skipped too. Once a step has failed the run, or a condition stopped it, nothing more
//! starts; the run ends when nothing is in flight.

use std::time::Duration;

use serde_json::Value;

use super::render::{Deferred, check_input_size, render_input};
use super::{Phase, RunState, Start};
use crate::actions::Call;
use crate::model::{Decision, LogLevel, RunStatus, StepStatus, Timestamp};

impl RunState {
    /// Marks the run as executing (first start, or resumption after a restart or approval)
    /// and returns the steps that were in flight when it stopped, to start again.
    pub fn begin(&mut self, owner: &str) -> Vec<Start> {
        match self.run.status {
            RunStatus::Pending => self.set_run(RunStatus::Running, LogLevel::Info, "run started"),
            _ => self.log(LogLevel::Info, None, format!("run resumed on {owner}")),
        }
        let running: Vec<usize> = (0..self.run.steps.len())
            .filter(|&i| self.run.steps[i].status == StepStatus::Running)
            .collect();
        let resumed = running
            .into_iter()
            .filter_map(|i| self.resume_step(i))
            .collect();
        self.run.control.left_cleanly = false;
        resumed
    }

    /// Decides every step whose parents are done: skip, park, fail or start.
    pub fn schedule(&mut self) -> Vec<Start> {
        let mut starts = Vec::new();
        loop {
            let mut changed = false;
            for idx in 0..self.run.steps.len() {
                if self.failure.is_some() || self.stopped_by.is_some() {
                    return starts;
                }
                if self.run.steps[idx].status != StepStatus::Pending || !self.parents_done(idx) {
                    continue;
                }
                changed = true;
                if let Some(reason) = self.skip_reason(idx) {
                    self.set_step(idx, StepStatus::Skipped, LogLevel::Info, reason);
                    continue;
                }
                if self.wf.steps[idx].approval.is_some() && !self.is_approved(idx) {
                    self.set_step(
                        idx,
                        StepStatus::WaitingApproval,
                        LogLevel::Info,
                        "waiting for approval",
                    );
                    continue;
                }
                if let Some(start) = self.prepare(idx) {
                    let n = start.first_attempt;
                    let action = self.wf.steps[idx].action_name.clone();
                    self.set_step(
                        idx,
                        StepStatus::Running,
                        LogLevel::Info,
                        format!("started ({action}, attempt {n})"),
                    );
                    starts.push(start);
                }
            }
            if !changed {
                return starts;
            }
        }
    }

    /// True when the run could go on by itself: a step is `RUNNING` without a task (given
    /// up between attempts on shutdown), or a pending step could be scheduled now.
    pub fn can_progress(&self) -> bool {
        (0..self.run.steps.len()).any(|i| match self.run.steps[i].status {
            StepStatus::Running => true,
            StepStatus::Pending => self.parents_done(i),
            _ => false,
        })
    }

    fn parents_done(&self, idx: usize) -> bool {
        self.wf
            .dag
            .parents(idx)
            .iter()
            .all(|&p| self.run.steps[p].status.is_finished())
    }

    /// Why step `idx` is skipped, if it is; a `when` that cannot be evaluated fails it.
    /// A heavy `when` is evaluated with the step's input, in the sandbox, instead.
    fn skip_reason(&mut self, idx: usize) -> Option<String> {
        let parents = self.wf.dag.parents(idx);
        if !parents.is_empty()
            && parents
                .iter()
                .all(|&p| self.run.steps[p].status == StepStatus::Skipped)
        {
            return Some("skipped: every step it depends on was skipped".into());
        }
        let when = self.wf.steps[idx].when.as_ref()?;
        if when.is_heavy() {
            return None;
        }
        match when.is_true(&self.scope()) {
            Ok(true) => None,
            Ok(false) => Some(format!("skipped: when {:?} is false", when.source())),
            Err(e) => {
                self.fail_step(idx, None, format!("when cannot be evaluated: {e}"), None);
                None
            }
        }
    }

    fn is_approved(&self, idx: usize) -> bool {
        let name = &self.run.steps[idx].name;
        self.run
            .approvals
            .iter()
            .any(|a| &a.step == name && a.decision == Decision::Approved)
    }

    /// The start of step `idx`: its input rendered here when every part of it is light,
    /// else the render handed to the step's task (and the sandbox). A template error or an
    /// input over `limits.max_input_bytes` fails the step instead.
    pub(super) fn prepare(&mut self, idx: usize) -> Option<Start> {
        let scope = self.scope();
        let deferred = Deferred::of(&self.wf, idx, &scope);
        let input = match &deferred {
            Some(_) => Value::Null,
            None => match render_input(&self.wf, idx, &scope, &mut std::iter::empty()) {
                Ok(input) => input,
                Err(e) => {
                    self.fail_step(idx, None, format!("input template failed: {e}"), None);
                    return None;
                }
            },
        };
        if let Err(error) = check_input_size(&input, self.limits.max_input_bytes) {
            self.fail_step(idx, None, error, None);
            return None;
        }
        let record = &self.run.steps[idx];
        let not_before = record.attempts.last().and_then(|a| {
            let delay = chrono::Duration::milliseconds(a.retry_in_ms? as i64);
            Some(a.finished_at? + delay)
        });
        Some(Start {
            index: idx,
            call: Call {
                input,
                run_id: self.run.id.clone(),
                step: record.name.clone(),
                idempotency_key: format!("{}/{}", self.run.id, record.name),
                context: self.scope.shared_context.clone(),
            },
            redactor: self.redactor.clone(),
            first_attempt: record.attempts.len() as u32 + 1,
            first_started: record
                .attempts
                .first()
                .map(|a| a.started_at)
                .unwrap_or_else(|| self.now()),
            not_before,
            deferred,
            max_input_bytes: self.limits.max_input_bytes,
        })
    }

    /// What happens next, given how many steps are in flight.
    pub fn phase(&self, in_flight: usize) -> Phase {
        if in_flight > 0 {
            return Phase::Busy;
        }
        if let Some(error) = &self.failure {
            return Phase::Done(RunStatus::Failed, Some(error.clone()));
        }
        if self.stopped_by.is_some() {
            return Phase::Done(RunStatus::Succeeded, None);
        }
        if self
            .run
            .steps
            .iter()
            .any(|s| s.status == StepStatus::WaitingApproval)
        {
            return Phase::Park;
        }
        Phase::Done(RunStatus::Succeeded, None)
    }

    /// Marks the steps in flight as canceled.
    pub fn abort_running(&mut self, reason: &str) {
        for idx in 0..self.run.steps.len() {
            if self.run.steps[idx].status == StepStatus::Running {
                self.run.steps[idx].error = Some(reason.to_owned());
                self.set_step(
                    idx,
                    StepStatus::Canceled,
                    LogLevel::Warn,
                    format!("canceled: {reason}"),
                );
            }
        }
    }

    /// Ends the run; steps not reached become `SKIPPED` (`CANCELED` when canceled).
    pub fn finish(&mut self, status: RunStatus, error: Option<String>) {
        let unreached = if status == RunStatus::Canceled {
            StepStatus::Canceled
        } else {
            StepStatus::Skipped
        };
        for idx in 0..self.run.steps.len() {
            let s = self.run.steps[idx].status;
            if !s.is_finished() {
                let s = if s == StepStatus::Running {
                    StepStatus::Canceled
                } else {
                    unreached
                };
                self.set_step(
                    idx,
                    s,
                    LogLevel::Info,
                    format!("{}: the run ended", s.as_str().to_lowercase()),
                );
            }
        }
        self.run.error = error.clone();
        self.run.finished_at = Some(self.now());
        self.run.control.approval_deadline = None;
        let (level, message) = match (status, error) {
            (RunStatus::Succeeded, _) => (LogLevel::Info, "run succeeded".to_owned()),
            (_, Some(e)) => (
                LogLevel::Error,
                format!("run {}: {e}", status.as_str().to_lowercase()),
            ),
            (_, None) => (
                LogLevel::Warn,
                format!("run {}", status.as_str().to_lowercase()),
            ),
        };
        self.set_run(status, level, message);
    }

    /// Parks the run until an approval decides; computes when the first approval times out.
    pub fn park(&mut self) {
        self.run.control.approval_deadline = self.approval_deadline();
        let waiting: Vec<&str> = self
            .run
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::WaitingApproval)
            .map(|s| s.name.as_str())
            .collect();
        let message = format!("waiting for approval of {}", waiting.join(", "));
        self.set_run(RunStatus::WaitingApproval, LogLevel::Info, message);
    }

    fn approval_deadline(&self) -> Option<Timestamp> {
        self.run
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.status == StepStatus::WaitingApproval)
            .filter_map(|(i, s)| {
                let timeout = self.wf.steps[i].approval.as_ref()?.timeout?;
                Some(s.waiting_since? + chrono::Duration::from_std(timeout).ok()?)
            })
            .min()
    }

    /// Adds `ms` of execution time (the run-level timeout counts it, parked time not).
    pub fn add_active(&mut self, ms: u64) {
        self.run.control.active_ms += ms;
        self.touch_head();
    }

    /// How much of the workflow's `timeout_ms` is left; `None` without one.
    pub fn time_left(&self) -> Option<Duration> {
        let limit = self.wf.timeout?;
        Some(limit.saturating_sub(Duration::from_millis(self.run.control.active_ms)))
    }

    /// The run used up its `timeout_ms`: the steps in flight are canceled and the run
    /// fails once nothing is in flight.
    pub fn time_out_run(&mut self) {
        let limit = self.wf.timeout.unwrap_or_default().as_millis();
        self.abort_running(&format!("the run exceeded its timeout_ms of {limit}"));
        self.failure = Some(format!("run exceeded timeout_ms {limit}"));
    }
}
