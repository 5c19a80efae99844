//! `foreach` steps: the step's action runs once per item of an array, at most
//! `concurrency` at a time, each item with its own attempts and retries. The step succeeds
//! with `{"items": [outputs in order]}` when every item did; the first item that fails for
//! good fails the step, and the items still in flight are canceled.
//!
//! Items live on the step record (`items`, and their outputs in the step's `output` as
//! they finish), so a resumed step starts only the items whose result was not committed.
//! The items together are held to `limits.max_output_bytes`: an item output that would
//! pass it is dropped (`null`) and the step is flagged truncated.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use super::results::add_usage;
use super::{RunState, Start};
use crate::actions::{Effect, Failure, Outcome};
use crate::model::{Attempt, Item, LogLevel, StepStatus};
use crate::size::json_len;

/// Where a running `foreach` step is: kept beside the record, rebuilt from it on resume.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Items not started yet, in order.
    queue: VecDeque<usize>,
    running: usize,
    left: usize,
    /// Bytes of the item outputs kept so far.
    bytes: usize,
}

/// The progress of every running `foreach` step, by step index.
pub(super) type Foreach = HashMap<usize, Progress>;

impl RunState {
    /// Foreach step `idx` starts: its items are evaluated (once; they are kept on the step)
    /// and the step is `RUNNING`. An expression that fails or gives no array fails it.
    pub(super) fn begin_foreach(&mut self, idx: usize) {
        let Some(foreach) = self.wf.steps[idx].foreach.as_ref() else {
            return;
        };
        let concurrency = foreach.concurrency;
        let items = match foreach.items.eval(&self.scope()) {
            Ok(Value::Array(items)) => items,
            Ok(other) => {
                let kind = kind_of(&other);
                let error = format!("foreach must give an array; it gave {kind}");
                self.fail_step(idx, None, error, None);
                return;
            }
            Err(e) => {
                let error = format!("foreach cannot be evaluated: {e}");
                self.fail_step(idx, None, error, None);
                return;
            }
        };
        let max = self.limits.foreach_items;
        if items.len() > max {
            let error = format!(
                "foreach gave {} items, over limits.foreach_items ({max})",
                items.len()
            );
            self.fail_step(idx, None, error, None);
            return;
        }
        let n = items.len();
        let step = &mut self.run.steps[idx];
        step.items = Some(
            (0..n)
                .map(|index| Item {
                    index,
                    status: StepStatus::Pending,
                    attempts: 0,
                    error: None,
                })
                .collect(),
        );
        step.output = Some(json!({ "items": vec![Value::Null; n] }));
        step.over = Some(Arc::new(items));
        let action = self.wf.steps[idx].action_name.clone();
        self.set_step(
            idx,
            StepStatus::Running,
            LogLevel::Info,
            format!("started ({action}, {n} items, {concurrency} at a time)"),
        );
        if n == 0 {
            self.finish_foreach(idx);
        }
    }

    /// A foreach step in flight at a restart: the items that were in flight start again
    /// (those whose result was committed do not).
    pub(super) fn resume_foreach(&mut self, idx: usize) {
        let Some(items) = self.run.steps[idx].items.as_mut() else {
            return;
        };
        let mut again = 0;
        for item in items.iter_mut() {
            if item.status == StepStatus::Running {
                item.status = StepStatus::Pending;
                again += 1;
            }
        }
        let done = items.iter().filter(|i| i.status.is_finished()).count();
        self.touch_step(idx);
        self.log(
            LogLevel::Warn,
            Some(idx),
            format!("foreach resumed: {done} items done; {again} in flight at restart start again"),
        );
    }

    /// The items to start now, across the running foreach steps, each within its step's
    /// `concurrency`. Once the run is failing or stopped only `always_run` steps go on.
    pub(super) fn item_starts(&mut self) -> Vec<Start> {
        let over = self.failure.is_some() || self.stopped_by.is_some();
        let mut starts = Vec::new();
        for idx in 0..self.run.steps.len() {
            let Some(foreach) = &self.wf.steps[idx].foreach else {
                continue;
            };
            if self.run.steps[idx].status != StepStatus::Running
                || (over && !self.wf.steps[idx].always_run)
            {
                continue;
            }
            let limit = foreach.concurrency;
            loop {
                let progress = self.progress(idx);
                if progress.running >= limit {
                    break;
                }
                let Some(item) = progress.queue.pop_front() else {
                    break;
                };
                progress.running += 1;
                match self.prepare_item(idx, item) {
                    Ok(start) => starts.push(start),
                    Err(error) => {
                        self.item_failed(idx, item, error, None);
                        break;
                    }
                }
            }
        }
        starts
    }

    fn prepare_item(&mut self, idx: usize, item: usize) -> Result<Start, String> {
        let value = self.run.steps[idx]
            .over
            .as_ref()
            .and_then(|over| over.get(item))
            .cloned()
            .unwrap_or(Value::Null);
        let scope = self.scope().with_item(&value, item);
        let record = self.item_mut(idx, item);
        record.status = StepStatus::Running;
        let first_attempt = record.attempts + 1;
        self.touch_item(idx);
        let mut start = self.prepare_with(idx, scope, Some(item))?;
        start.first_attempt = first_attempt;
        start.first_started = self.now();
        start.not_before = None;
        Ok(start)
    }

    /// The progress of foreach step `idx`, rebuilt from its record when not kept.
    fn progress(&mut self, idx: usize) -> &mut Progress {
        let step = &self.run.steps[idx];
        self.foreach.entry(idx).or_insert_with(|| {
            let items = step.items.as_deref().unwrap_or_default();
            let kept = step
                .output
                .as_ref()
                .and_then(|o| o.get("items"))
                .and_then(Value::as_array)
                .map(|outputs| outputs.iter().filter(|o| !o.is_null()).map(json_len).sum())
                .unwrap_or(0);
            Progress {
                queue: items
                    .iter()
                    .filter(|i| i.status == StepStatus::Pending)
                    .map(|i| i.index)
                    .collect(),
                running: items
                    .iter()
                    .filter(|i| i.status == StepStatus::Running)
                    .count(),
                left: items.iter().filter(|i| !i.status.is_finished()).count(),
                bytes: kept,
            }
        })
    }

    fn item_mut(&mut self, idx: usize, item: usize) -> &mut Item {
        let items = self.run.steps[idx].items.get_or_insert_with(Vec::new);
        if item >= items.len() {
            items.resize_with(item + 1, || Item {
                index: item,
                status: StepStatus::Pending,
                attempts: 0,
                error: None,
            });
        }
        &mut items[item]
    }

    fn item_running(&self, idx: usize, item: usize) -> bool {
        self.run.steps[idx].status == StepStatus::Running
            && self.run.steps[idx]
                .items
                .as_ref()
                .and_then(|items| items.get(item))
                .is_some_and(|i| i.status == StepStatus::Running)
    }

    /// Records a failed attempt of an item that will be retried.
    pub fn on_item_retry(
        &mut self,
        idx: usize,
        item: usize,
        attempt: Attempt,
        response: Option<String>,
    ) {
        if !self.item_running(idx, item) {
            return;
        }
        self.item_mut(idx, item).attempts = attempt.attempt;
        self.touch_item(idx);
        let max = self.wf.steps[idx].retry.max + 1;
        let message = format!(
            "item {item}: attempt {} of {max} failed: {}{}; retrying in {} ms",
            attempt.attempt,
            attempt.error.as_deref().unwrap_or("error"),
            response
                .map(|r| format!(" (response: {r})"))
                .unwrap_or_default(),
            attempt.retry_in_ms.unwrap_or_default(),
        );
        self.log(LogLevel::Warn, Some(idx), message);
    }

    /// Records an item's last attempt and its result (already redacted of secrets).
    pub fn on_item_done(
        &mut self,
        idx: usize,
        item: usize,
        attempt: Attempt,
        result: Result<Outcome, Failure>,
    ) {
        if !self.item_running(idx, item) {
            return;
        }
        let n = attempt.attempt;
        self.item_mut(idx, item).attempts = n;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(failure) => {
                let error = format!("attempt {n} failed: {}", failure.message);
                self.item_failed(idx, item, error, failure.http_code);
                return;
            }
        };
        if let Effect::MergeContext(values) = outcome.effect
            && let Err(size) = self.merge_context(values)
        {
            let max = self.limits.max_context_bytes;
            let error = format!(
                "attempt {n} failed: the context would grow to {size} bytes, over \
                 limits.max_context_bytes ({max})"
            );
            self.item_failed(idx, item, error, None);
            return;
        }
        if let Some(usage) = &outcome.usage {
            add_usage(&mut self.run.usage, usage);
        }
        self.keep_item_output(idx, item, outcome.output);
        self.item_mut(idx, item).status = StepStatus::Succeeded;
        self.touch_item(idx);
        let progress = self.progress(idx);
        progress.running = progress.running.saturating_sub(1);
        progress.left = progress.left.saturating_sub(1);
        if progress.left == 0 {
            self.finish_foreach(idx);
        }
    }

    /// Keeps an item's output in the step's `output.items`, unless the items together
    /// would pass `limits.max_output_bytes`.
    fn keep_item_output(&mut self, idx: usize, item: usize, output: Value) {
        let size = json_len(&output);
        let max = self.limits.max_output_bytes;
        let progress = self.progress(idx);
        let fits = progress.bytes + size <= max;
        if fits {
            progress.bytes += size;
        }
        let step = &mut self.run.steps[idx];
        let first_cut = !fits && !step.output_truncated;
        if let Some(slot) = step
            .output
            .as_mut()
            .and_then(|o| o.get_mut("items"))
            .and_then(Value::as_array_mut)
            .and_then(|outputs| outputs.get_mut(item))
        {
            *slot = if fits { output } else { Value::Null };
        }
        if first_cut {
            step.output_truncated = true;
            let message = format!(
                "output truncated: the items' outputs pass limits.max_output_bytes ({max}) at \
                 item {item}; items past it are null in output.items"
            );
            self.log(LogLevel::Warn, Some(idx), message);
        }
    }

    /// An item failed for good: the step fails, and its other items in flight are
    /// canceled (the runner drops their calls).
    pub fn item_failed(&mut self, idx: usize, item: usize, error: String, http_code: Option<u16>) {
        let record = self.item_mut(idx, item);
        record.status = StepStatus::Failed;
        record.error = Some(error.clone());
        let output = self.run.steps[idx].output.take();
        self.fail_step(
            idx,
            http_code,
            format!("item {item} failed: {error}"),
            output,
        );
    }

    fn finish_foreach(&mut self, idx: usize) {
        let n = self.run.steps[idx].items.as_ref().map_or(0, Vec::len);
        let attempts: u32 = self.run.steps[idx]
            .items
            .iter()
            .flatten()
            .map(|i| i.attempts)
            .sum();
        self.set_step(
            idx,
            StepStatus::Succeeded,
            LogLevel::Info,
            format!("succeeded: {n} items in {attempts} attempts"),
        );
    }

    /// A step that carries items is finished: items in flight are canceled, items never
    /// started are skipped, and what it iterated over is dropped.
    pub(super) fn close_items(&mut self, idx: usize) {
        self.foreach.remove(&idx);
        let step = &mut self.run.steps[idx];
        step.over = None;
        for item in step.items.iter_mut().flatten() {
            match item.status {
                StepStatus::Running => {
                    item.status = StepStatus::Canceled;
                    item.error = Some("canceled: the step ended".into());
                }
                StepStatus::Pending => item.status = StepStatus::Skipped,
                _ => {}
            }
        }
    }

    /// True when item `item` of step `idx` still wants its call (for the runner, which
    /// drops the calls of items canceled by a failure).
    pub fn item_wanted(&self, idx: usize, item: usize) -> bool {
        self.item_running(idx, item)
    }
}

/// The JSON type of `value`, for messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
