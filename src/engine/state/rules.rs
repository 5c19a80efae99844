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

    /// Decides every step whose parents are done: skip, park, fail or start; and the items
    /// of `foreach` steps that may start. Once the run is failing or a condition stopped
    /// it, only `always_run` steps still start; the steps that will not run are skipped at
    /// once when some `always_run` step waits for them.
    pub fn schedule(&mut self) -> Vec<Start> {
        let mut starts = self.schedule_steps();
        starts.extend(self.item_starts());
        starts
    }

    fn schedule_steps(&mut self) -> Vec<Start> {
        let mut starts = Vec::new();
        loop {
            let mut changed = false;
            for idx in 0..self.run.steps.len() {
                let over = self.failure.is_some() || self.stopped_by.is_some();
                if over && !self.wf.has_always_run {
                    return starts;
                }
                let always = self.wf.steps[idx].always_run;
                if over && !always {
                    changed |= self.give_up_step(idx);
                    continue;
                }
                if self.run.steps[idx].status != StepStatus::Pending || !self.parents_done(idx) {
                    continue;
                }
                self.begin_step(idx, &mut starts);
                // Only a step that finished here (skipped, failed before it started, a
                // `foreach` over nothing) can make another step ready: then look again.
                changed |= self.run.steps[idx].status.is_finished();
            }
            if !changed {
                return starts;
            }
        }
    }

    /// Moves ready step `idx` on: skipped, waiting for approval, into its `foreach`, or
    /// started (its start added to `starts`).
    fn begin_step(&mut self, idx: usize, starts: &mut Vec<Start>) {
        if let Some(reason) = self.skip_reason(idx) {
            self.set_step(idx, StepStatus::Skipped, LogLevel::Info, reason);
            return;
        }
        if self.wf.steps[idx].approval.is_some() && !self.is_approved(idx) {
            self.set_step(
                idx,
                StepStatus::WaitingApproval,
                LogLevel::Info,
                "waiting for approval",
            );
            return;
        }
        if self.wf.steps[idx].foreach.is_some() {
            self.begin_foreach(idx);
            return;
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

    /// A step that will not run because the run is failing or stopped: skipped now (so the
    /// `always_run` steps after it can run), and a child run it waits for is abandoned.
    fn give_up_step(&mut self, idx: usize) -> bool {
        let status = self.run.steps[idx].status;
        if !matches!(
            status,
            StepStatus::Pending | StepStatus::WaitingApproval | StepStatus::Waiting
        ) {
            return false;
        }
        self.abandoned.extend(self.child_of(idx));
        let reason = match &self.stopped_by {
            Some(by) if self.failure.is_none() => {
                format!("skipped: condition {by:?} stopped the run")
            }
            _ => "skipped: the run is failing".to_owned(),
        };
        self.set_step(idx, StepStatus::Skipped, LogLevel::Info, reason);
        true
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
        if !self.wf.steps[idx].always_run
            && !parents.is_empty()
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

    /// True when step `idx` was approved since the run last started again (a re-run asks
    /// again for the approvals of the steps it resets).
    fn is_approved(&self, idx: usize) -> bool {
        let name = &self.run.steps[idx].name;
        let since = self.run.retries.last().map(|r| r.at);
        self.run.approvals.iter().any(|a| {
            &a.step == name && a.decision == Decision::Approved && since.is_none_or(|t| a.at >= t)
        })
    }

    /// The start of step `idx`. A template error or an input over
    /// `limits.max_input_bytes` fails the step instead.
    pub(super) fn prepare(&mut self, idx: usize) -> Option<Start> {
        match self.prepare_with(idx, self.scope(), None) {
            Ok(start) => Some(start),
            Err(error) => {
                self.fail_step(idx, None, error, None);
                None
            }
        }
    }

    /// The start of step `idx` (or of its item `item`) against `scope`: its input rendered
    /// here when every part of it is light, else the render handed to the step's task (and
    /// the sandbox). The error is what the step (or item) fails with.
    pub(super) fn prepare_with(
        &mut self,
        idx: usize,
        scope: crate::expr::Scope,
        item: Option<usize>,
    ) -> Result<Start, String> {
        if let Some(error) = self.budget_refusal(idx) {
            return Err(error);
        }
        let deferred = Deferred::of(&self.wf, idx, &scope);
        let input = match &deferred {
            Some(_) => Value::Null,
            None => render_input(&self.wf, idx, &scope, &mut std::iter::empty())
                .map_err(|e| format!("input template failed: {e}"))?,
        };
        check_input_size(&input, self.limits.max_input_bytes)?;
        let record = &self.run.steps[idx];
        let idempotency_key = match item {
            Some(i) => format!("{}/{}/{i}", self.run.id, record.name),
            None => format!("{}/{}", self.run.id, record.name),
        };
        let not_before = record.attempts.last().and_then(|a| {
            let delay = chrono::Duration::milliseconds(a.retry_in_ms? as i64);
            Some(a.finished_at? + delay)
        });
        Ok(Start {
            index: idx,
            call: Call {
                input,
                run_id: self.run.id.clone(),
                step: record.name.clone(),
                idempotency_key,
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
            item,
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
            .any(|s| matches!(s.status, StepStatus::WaitingApproval | StepStatus::Waiting))
        {
            return Phase::Park;
        }
        Phase::Done(RunStatus::Succeeded, None)
    }

    /// Marks step `idx`, in flight, as canceled.
    pub fn cancel_step(&mut self, idx: usize, reason: &str) {
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

    /// Ends the run; steps not reached become `SKIPPED` (`CANCELED` when canceled). Child
    /// runs its steps waited for are abandoned (the runner cancels them).
    pub fn finish(&mut self, status: RunStatus, error: Option<String>) {
        let children = self.children();
        self.abandoned.extend(children);
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
        let error = error.map(crate::model::without_nul);
        self.run.error = error.clone();
        self.run.finished_at = Some(self.now());
        self.run.control.wake_at = None;
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

    /// Parks the run until something outside it moves it on: `WAITING_APPROVAL` while an
    /// approval is pending, else `WAITING`; `wake_at` is when it must be woken by itself.
    pub fn park(&mut self) {
        self.run.control.wake_at = self.next_wake();
        let approval = self
            .run
            .steps
            .iter()
            .any(|s| s.status == StepStatus::WaitingApproval);
        let status = if approval {
            RunStatus::WaitingApproval
        } else {
            RunStatus::Waiting
        };
        let message = format!("waiting for {}", self.waiting_for());
        self.set_run(status, LogLevel::Info, message);
    }

    /// A parked run goes on: it is `RUNNING` again (and claims a slot to execute).
    pub(in crate::engine) fn resume_if_parked(&mut self, why: &str) {
        if self.run.status.is_parked() {
            self.run.control.wake_at = None;
            self.set_run(
                RunStatus::Running,
                LogLevel::Info,
                format!("resumed: {why}"),
            );
        }
    }

    /// The earliest approval timeout of the steps waiting for approval.
    pub(super) fn approval_deadline(&self) -> Option<Timestamp> {
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

/// What the steps a run finished say about its end, for a run read back from the store
/// (after a restart, or a decision on a parked run): the error of a step that failed the
/// run, and the condition that stopped it.
pub(super) fn outcome_so_far(
    run: &crate::model::Run,
    wf: &crate::definition::Workflow,
) -> (Option<String>, Option<String>) {
    let mut failure = None;
    let mut stopped_by = None;
    for (record, step) in run.steps.iter().zip(&wf.steps) {
        match record.status {
            StepStatus::Failed if step.on_failure == crate::definition::OnFailure::Fail => {
                let error = record.error.as_deref().unwrap_or("failed");
                failure.get_or_insert_with(|| format!("step {:?} failed: {error}", record.name));
            }
            StepStatus::Succeeded
                if step.action_name == "condition"
                    && record.output.as_ref().and_then(|o| o.get("result"))
                        == Some(&Value::Bool(false))
                    && step
                        .input
                        .literal_field("on_false")
                        .is_none_or(|v| v == "stop") =>
            {
                stopped_by.get_or_insert_with(|| record.name.clone());
            }
            _ => {}
        }
    }
    (failure, stopped_by)
}
