//! Applying what a step's attempts report: a retry to come, a success (with its effect on
//! the run: context merged, run stopped, usage added) or a failure (which fails the run
//! unless the step says `on_failure: continue`).

use serde_json::{Map, Value};

use super::RunState;
use crate::actions::{Effect, Failure, Outcome};
use crate::definition::OnFailure;
use crate::engine::failure_details::{http_note, response_excerpt, response_note};
use crate::model::{Attempt, LogLevel, StepStatus};
use crate::size::Cut;

impl RunState {
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
        self.survived(idx);
        self.touch_step(idx);
        self.log(LogLevel::Warn, Some(idx), message);
        self.event("step.retrying", Some(idx), StepStatus::Running.as_str());
    }

    /// Records that a step's deferred render found its `when` false.
    pub fn on_skipped(&mut self, idx: usize, reason: String) {
        self.set_step(idx, StepStatus::Skipped, LogLevel::Info, reason);
    }

    /// Records that a step's deferred render failed: the step fails without an attempt.
    pub fn on_unrendered(&mut self, idx: usize, error: String) {
        self.fail_step(idx, None, error, None);
    }

    /// Records a step's final attempt and its result (already redacted of secrets).
    pub fn on_done(&mut self, idx: usize, attempt: Attempt, result: Result<Outcome, Failure>) {
        let n = attempt.attempt;
        let took = attempt
            .finished_at
            .map(|f| (f - attempt.started_at).num_milliseconds())
            .unwrap_or_default();
        self.run.steps[idx].attempts.push(attempt);
        self.survived(idx);
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
                    Effect::Park(parking) => {
                        let step = &mut self.run.steps[idx];
                        step.output = Some(outcome.output);
                        self.park_step(idx, parking);
                        return;
                    }
                }
                let step = &mut self.run.steps[idx];
                step.output = Some(outcome.output);
                step.http_code = outcome.http_code;
                step.error = None;
                if let Some(usage) = outcome.usage {
                    let before = super::budget::tokens_used(&self.run.usage);
                    add_usage(&mut self.run.usage, &usage);
                    self.note_budget(idx, before);
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
    pub(super) fn fail_step(
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
        let error = crate::model::without_nul(error);
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
}

/// Adds numeric usage counters (`prompt_tokens`, …) into the run's totals.
pub(super) fn add_usage(total: &mut Map<String, Value>, usage: &Map<String, Value>) {
    for (k, v) in usage {
        if let Some(n) = v.as_u64() {
            let sum = total.get(k).and_then(Value::as_u64).unwrap_or(0) + n;
            total.insert(k.clone(), Value::from(sum));
        }
    }
}
