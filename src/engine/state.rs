//! The in-memory state of one run and the rules that move it: scheduling, step results,
//! parking and finishing. Pure and synchronous; the runner drives it and commits what it
//! records.
//!
//! Every change is recorded twice in the same [`Transition`]: in the rows it touches and
//! in a log entry (with a [`StatusChange`] when a status moved, and a hook event when
//! hooks are on), so the log alone tells the story of a run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use minijinja::value::Value as MjValue;
use serde_json::{Map, Value};

use super::notes::{http_note, response_excerpt, response_note};
use super::{RunLimits, Settings};
use crate::actions::{Call, Effect, Failure, Outcome};
use crate::definition::{OnFailure, Workflow};
use crate::expr::{self, Redactor, Scope, Secrets};
use crate::model::{
    Attempt, Decision, LogLevel, NewEvent, NewLogEntry, Run, RunStatus, StatusChange, StepStatus,
    Timestamp, now,
};
use crate::size::{Cut, json_len};
use crate::store::{Guard, OwnerChange, RunHead, Transition};

/// A step the runner must start now.
#[derive(Debug)]
pub struct Start {
    pub index: usize,
    pub call: Call,
    pub redactor: Redactor,
    /// The number of the first attempt to make (later than 1 when resuming).
    pub first_attempt: u32,
    /// When the step's first attempt started, for `deadline_ms`.
    pub first_started: Timestamp,
    /// Do not start before this (a retry delay chosen before a restart).
    pub not_before: Option<Timestamp>,
}

/// What the run does next when nothing is in flight.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Steps are in flight.
    Busy,
    /// Only approvals can move the run on.
    Park,
    /// The run is over.
    Done(RunStatus, Option<String>),
}

/// One run in memory, with the changes not yet committed.
pub struct RunState {
    pub run: Run,
    pub wf: Arc<Workflow>,
    secrets: Arc<BTreeMap<String, crate::secret::Secret>>,
    emit_events: bool,
    limits: RunLimits,
    step_scopes: BTreeMap<String, MjValue>,
    /// `step_scopes` as one template value, rebuilt when a step finishes.
    steps_mj: MjValue,
    context_mj: MjValue,
    context: Arc<Map<String, Value>>,
    dirty: BTreeSet<usize>,
    head_dirty: bool,
    context_dirty: bool,
    pub(super) approvals: Vec<crate::model::Approval>,
    logs: Vec<NewLogEntry>,
    events: Vec<NewEvent>,
    /// Set when a step failed the run: the error the run ends with.
    pub failure: Option<String>,
    /// Set when a condition stopped the run: the step that did.
    pub stopped_by: Option<String>,
}

impl RunState {
    pub fn new(run: Run, wf: Arc<Workflow>, settings: &Settings) -> Self {
        let step_scopes = run
            .steps
            .iter()
            .filter(|s| s.status.is_finished())
            .map(|s| (s.name.clone(), scope_of(s)))
            .collect();
        let context = Arc::new(run.context.clone());
        let steps_mj = expr::steps_scope(&step_scopes);
        Self {
            steps_mj,
            context_mj: expr::to_scope_value(&Value::Object(run.context.clone())),
            context,
            run,
            wf,
            secrets: settings.secrets.clone(),
            emit_events: settings.emit_events,
            limits: settings.limits,
            step_scopes,
            dirty: BTreeSet::new(),
            head_dirty: false,
            context_dirty: false,
            approvals: Vec::new(),
            logs: Vec::new(),
            events: Vec::new(),
            failure: None,
            stopped_by: None,
        }
    }

    // ---- recording -------------------------------------------------------------------

    /// Adds a log entry about the run, or about step `step`.
    pub fn log(&mut self, level: LogLevel, step: Option<usize>, message: impl Into<String>) {
        let name = step.map(|i| self.run.steps[i].name.as_str());
        self.logs.push(NewLogEntry::engine(level, name, message));
    }

    fn event(&mut self, kind: &str, step: Option<usize>, status: &str) {
        if self.emit_events {
            self.events.push(NewEvent {
                kind: kind.to_owned(),
                step: step.map(|i| self.run.steps[i].name.clone()),
                status: status.to_owned(),
                ts: now(),
            });
        }
    }

    /// Moves step `idx` to `status`, logging `message` with the change.
    pub fn set_step(
        &mut self,
        idx: usize,
        status: StepStatus,
        level: LogLevel,
        message: impl Into<String>,
    ) {
        let at = now();
        let step = &mut self.run.steps[idx];
        step.status = status;
        match status {
            StepStatus::Running if step.started_at.is_none() => step.started_at = Some(at),
            StepStatus::WaitingApproval => step.waiting_since = Some(at),
            s if s.is_finished() => step.finished_at = Some(at),
            _ => {}
        }
        let change = StatusChange {
            run_status: self.run.status,
            step: Some(step.name.clone()),
            step_status: Some(status),
        };
        let name = step.name.clone();
        self.logs
            .push(NewLogEntry::engine(level, Some(&name), message).with_status(change));
        self.dirty.insert(idx);
        self.remember_step(idx);
        self.refresh_current_step();
        let kind = match status {
            StepStatus::Running => Some("step.started"),
            StepStatus::Succeeded => Some("step.succeeded"),
            StepStatus::Failed => Some("step.failed"),
            _ => None,
        };
        if let Some(kind) = kind {
            self.event(kind, Some(idx), status.as_str());
        }
    }

    /// Moves the run to `status`, logging `message` with the change.
    pub fn set_run(&mut self, status: RunStatus, level: LogLevel, message: impl Into<String>) {
        self.run.status = status;
        self.head_dirty = true;
        let change = StatusChange {
            run_status: status,
            step: None,
            step_status: None,
        };
        self.logs
            .push(NewLogEntry::engine(level, None, message).with_status(change));
        let kind = match status {
            RunStatus::Running if self.run.started_at.is_none() => Some("run.started"),
            RunStatus::WaitingApproval => Some("run.waiting_approval"),
            RunStatus::Succeeded => Some("run.succeeded"),
            RunStatus::Failed => Some("run.failed"),
            RunStatus::Canceled => Some("run.canceled"),
            _ => None,
        };
        if let Some(kind) = kind {
            self.event(kind, None, status.as_str());
        }
        if status == RunStatus::Running && self.run.started_at.is_none() {
            self.run.started_at = Some(now());
        }
    }

    /// Keeps what templates see of step `idx` (`steps.<name>`) in line with its record:
    /// finished steps are visible, others are not.
    fn remember_step(&mut self, idx: usize) {
        let step = &self.run.steps[idx];
        if step.status.is_finished() {
            self.step_scopes.insert(step.name.clone(), scope_of(step));
        } else if self.step_scopes.remove(&step.name).is_none() {
            return;
        }
        self.steps_mj = expr::steps_scope(&self.step_scopes);
    }

    fn refresh_current_step(&mut self) {
        let current = self
            .run
            .steps
            .iter()
            .position(|s| !s.status.is_finished())
            .unwrap_or(self.run.steps.len());
        if current != self.run.current_step {
            self.run.current_step = current;
            self.head_dirty = true;
        }
    }

    /// The changes recorded since the last commit as one transition, or `None` when
    /// nothing changed. The record is kept until [`Self::committed`], so that a commit the
    /// store could not make is built again rather than copied in advance.
    pub fn pending(&self, guard: Guard, owner: OwnerChange) -> Option<Transition> {
        let mut tx = Transition::new(self.run.id.clone(), guard);
        tx.owner = owner;
        if self.head_dirty || !self.dirty.is_empty() {
            tx.head = Some(RunHead::of(&self.run));
        }
        if self.context_dirty {
            tx.context = Some(self.run.context.clone());
        }
        tx.steps = self
            .dirty
            .iter()
            .map(|&i| (i, self.run.steps[i].clone()))
            .collect();
        tx.approvals = self.approvals.clone();
        tx.logs = self.logs.clone();
        tx.events = self.events.clone();
        (!tx.is_empty()).then_some(tx)
    }

    /// Forgets the recorded changes, now committed at revision `rev`.
    pub fn committed(&mut self, rev: u64) {
        self.dirty.clear();
        self.approvals.clear();
        self.logs.clear();
        self.events.clear();
        self.head_dirty = false;
        self.context_dirty = false;
        self.run.control.rev = rev;
        self.run.updated_at = now();
    }

    // ---- scope -----------------------------------------------------------------------

    fn scope(&self) -> Scope {
        Scope {
            context: self.context_mj.clone(),
            steps: self.steps_mj.clone(),
            run: minijinja::context! { id => self.run.id.clone(), workflow_id => self.run.workflow_id.clone() },
            secrets: Arc::new(Secrets::new(self.secrets.clone())),
        }
    }

    /// Merges `values` into the context, unless that would make it larger than
    /// `limits.max_context_bytes`: then nothing changes and the size it would have had is
    /// the error.
    pub fn merge_context(&mut self, values: Map<String, Value>) -> Result<(), usize> {
        if values.is_empty() {
            return Ok(());
        }
        // Merge in place and undo on overflow, rather than measure a merged copy: the
        // context may be large and this runs for every `set`.
        let mut replaced = Vec::with_capacity(values.len());
        for (key, value) in values {
            let old = self.run.context.insert(key.clone(), value);
            replaced.push((key, old));
        }
        let size = json_len(&self.run.context);
        if size > self.limits.max_context_bytes {
            for (key, old) in replaced.into_iter().rev() {
                match old {
                    Some(value) => self.run.context.insert(key, value),
                    None => self.run.context.shift_remove(&key),
                };
            }
            return Err(size);
        }
        self.context = Arc::new(self.run.context.clone());
        self.context_mj = expr::to_scope_value(&Value::Object(self.run.context.clone()));
        self.context_dirty = true;
        Ok(())
    }

    // ---- lifecycle -------------------------------------------------------------------

    /// Marks the run as executing (first start, or resumption after a restart or approval).
    pub fn begin(&mut self, owner: &str) -> Vec<Start> {
        match self.run.status {
            RunStatus::Pending => self.set_run(RunStatus::Running, LogLevel::Info, "run started"),
            _ => self.log(LogLevel::Info, None, format!("run resumed on {owner}")),
        }
        let running: Vec<usize> = (0..self.run.steps.len())
            .filter(|&i| self.run.steps[i].status == StepStatus::Running)
            .collect();
        running
            .into_iter()
            .filter_map(|i| {
                let n = self.run.steps[i].attempts.len() as u32 + 1;
                self.log(
                    LogLevel::Warn,
                    Some(i),
                    format!("step was in flight at restart; attempt {n} starts again"),
                );
                self.prepare(i)
            })
            .collect()
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

    /// Renders step `idx`'s input; a template error fails the step instead.
    fn prepare(&mut self, idx: usize) -> Option<Start> {
        let step = &self.wf.steps[idx];
        let scope = self.scope();
        let rendered = step.input.render(&scope).and_then(|mut input| {
            for (key, expr) in &step.expressions {
                if let Value::Object(map) = &mut input {
                    map.insert(key.clone(), Value::Bool(expr.is_true(&scope)?));
                }
            }
            Ok(input)
        });
        let redactor = scope.secrets.redactor();
        let input = match rendered {
            Ok(input) => input,
            Err(e) => {
                self.fail_step(idx, None, format!("input template failed: {e}"), None);
                return None;
            }
        };
        let size = json_len(&input);
        let max = self.limits.max_input_bytes;
        if size > max {
            let error =
                format!("the rendered input is {size} bytes, over limits.max_input_bytes ({max})");
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
                context: self.context.clone(),
            },
            redactor,
            first_attempt: record.attempts.len() as u32 + 1,
            first_started: record
                .attempts
                .first()
                .map(|a| a.started_at)
                .unwrap_or_else(now),
            not_before,
        })
    }

    /// Records a failed attempt that will be retried; `response` is the start of what the
    /// downstream answered, for the log.
    pub fn on_retry(&mut self, idx: usize, attempt: Attempt, response: Option<String>) {
        let delay = attempt.retry_in_ms.unwrap_or_default();
        let max = self.wf.steps[idx].retry.max + 1;
        let message = format!(
            "attempt {} of {max} failed{}: {}{}; retrying in {delay} ms",
            attempt.attempt,
            http_note(attempt.http_code, attempt.error.as_deref()),
            attempt.error.as_deref().unwrap_or("error"),
            response_note(response.as_deref()),
        );
        self.run.steps[idx].attempts.push(attempt);
        self.dirty.insert(idx);
        self.log(LogLevel::Warn, Some(idx), message);
        self.event("step.retrying", Some(idx), StepStatus::Running.as_str());
    }

    /// Records a step's final attempt and its result (already redacted of secrets).
    pub fn on_done(&mut self, idx: usize, attempt: Attempt, result: Result<Outcome, Failure>) {
        let n = attempt.attempt;
        let took = attempt
            .finished_at
            .map(|f| (f - attempt.started_at).num_milliseconds())
            .unwrap_or_default();
        self.run.steps[idx].attempts.push(attempt);
        let output = match &result {
            Ok(outcome) => Some(&outcome.output),
            Err(failure) => failure.output.as_ref(),
        };
        if let Some(cut) = output.and_then(Cut::found_in) {
            let note = self.truncation_note(cut);
            self.log(LogLevel::Warn, Some(idx), note);
        }
        match result {
            Ok(outcome) => {
                match outcome.effect {
                    Effect::None => {}
                    Effect::MergeContext(values) => {
                        if let Err(size) = self.merge_context(values) {
                            let max = self.limits.max_context_bytes;
                            let error = format!(
                                "attempt {n} failed: the context would grow to {size} bytes, \
                                 over limits.max_context_bytes ({max})"
                            );
                            self.fail_step(idx, None, error, None);
                            return;
                        }
                    }
                    Effect::StopRun => self.stopped_by = Some(self.run.steps[idx].name.clone()),
                }
                let step = &mut self.run.steps[idx];
                step.output = Some(outcome.output);
                step.http_code = outcome.http_code;
                step.error = None;
                if let Some(usage) = outcome.usage {
                    add_usage(&mut self.run.usage, &usage);
                }
                let code = outcome
                    .http_code
                    .map(|c| format!(" (HTTP {c})"))
                    .unwrap_or_default();
                self.set_step(
                    idx,
                    StepStatus::Succeeded,
                    LogLevel::Info,
                    format!("succeeded{code} on attempt {n} in {took} ms"),
                );
                if let Some(by) = &self.stopped_by {
                    let message = format!("condition {by:?} is false: stopping the run");
                    self.log(LogLevel::Info, Some(idx), message);
                }
            }
            Err(failure) => {
                let error = format!("attempt {n} failed: {}", failure.message);
                let note = format!(
                    "{}{}",
                    http_note(failure.http_code, Some(&failure.message)),
                    response_note(
                        failure
                            .output
                            .as_ref()
                            .and_then(response_excerpt)
                            .as_deref()
                    )
                );
                self.fail_step_noted(idx, failure.http_code, error, failure.output, &note);
            }
        }
    }

    /// The log line saying how a step's output was cut to `limits.max_output_bytes`.
    fn truncation_note(&self, cut: Cut) -> String {
        let max = self.limits.max_output_bytes;
        match cut {
            Cut::Body(n) => format!(
                "output truncated: the response body of {n} bytes is over limits.max_output_bytes \
                 ({max}); output.body holds {{truncated, original_bytes, preview}} instead"
            ),
            Cut::Whole(n) => format!(
                "output truncated: {n} bytes are over limits.max_output_bytes ({max}); the \
                 output is {{truncated, original_bytes, preview}} instead"
            ),
        }
    }

    /// Fails step `idx`; with `on_failure: fail` the run fails too.
    fn fail_step(
        &mut self,
        idx: usize,
        http_code: Option<u16>,
        error: String,
        output: Option<Value>,
    ) {
        self.fail_step_noted(idx, http_code, error, output, "");
    }

    /// [`Self::fail_step`], with `note` added to the log entry only (not to the step's error).
    fn fail_step_noted(
        &mut self,
        idx: usize,
        http_code: Option<u16>,
        error: String,
        output: Option<Value>,
        note: &str,
    ) {
        let step = &mut self.run.steps[idx];
        step.error = Some(error.clone());
        step.http_code = http_code.or(step.http_code);
        step.output = output;
        let name = step.name.clone();
        self.set_step(
            idx,
            StepStatus::Failed,
            LogLevel::Error,
            format!("failed: {error}{note}"),
        );
        match self.wf.steps[idx].on_failure {
            OnFailure::Fail => {
                if self.failure.is_none() {
                    self.failure = Some(format!("step {name:?} failed: {error}"));
                }
            }
            OnFailure::Continue => self.log(
                LogLevel::Warn,
                Some(idx),
                "on_failure is continue: the run goes on",
            ),
        }
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

    /// The largest context this run may have, in bytes.
    pub fn context_limit(&self) -> usize {
        self.limits.max_context_bytes
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
        self.run.finished_at = Some(now());
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

    /// Adds `ms` of execution time (the run-level timeout counts it).
    pub fn add_active(&mut self, ms: u64) {
        self.run.control.active_ms += ms;
        self.head_dirty = true;
    }
}

/// The scope entry of a finished step.
fn scope_of(step: &crate::model::StepRun) -> MjValue {
    expr::step_scope(
        step.output.as_ref(),
        step.status.as_str(),
        step.http_code,
        step.error.as_deref(),
    )
}

/// Adds numeric usage counters (`prompt_tokens`, …) into the run's totals.
fn add_usage(total: &mut Map<String, Value>, usage: &Map<String, Value>) {
    for (k, v) in usage {
        if let Some(n) = v.as_u64() {
            let sum = total.get(k).and_then(Value::as_u64).unwrap_or(0) + n;
            total.insert(k.clone(), Value::from(sum));
        }
    }
}
