//! `task` steps in a run's state (DESIGN §8). A task step parks (`WAITING`) with its task
//! written in the same commit ([`TaskOp::Enqueue`]), so the step and its task never
//! disagree. An ended claim comes back through [`RunState::task_ended`]: the step
//! succeeds, fails, or its task goes back on the queue for the next attempt, as the step's
//! `retry` says, all in one commit with the task row ([`TaskOp::Retry`] or
//! [`TaskOp::Settle`]). A step that stops waiting for any other reason (the run was
//! canceled or ended) cancels its task ([`RunState::release_task`]).
//!
//! The step's `attempts` are its claims: each ended claim (completed, failed, or expired)
//! is one attempt, numbered like the task's `attempt`.

use std::time::Duration;

use serde_json::Value;

use super::RunState;
use crate::engine::retry::{GiveUp, next_delay};
use crate::model::{Attempt, LogLevel, StepStatus, Waiting};
use crate::outbound::{Failure, FailureKind};
use crate::store::tasks::{NewTask, TaskOp, TaskRecord, TaskStatus};

/// A task's lease when its step sets no `heartbeat_ms`.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// Why an ended claim was not applied: its step no longer waits for that claim.
#[derive(Debug, Clone, PartialEq)]
pub struct NotWaiting(pub String);

impl RunState {
    /// Step `idx` hands its work to a worker: its task goes on `queue` with the next
    /// commit, and the step waits for it.
    pub(super) fn enqueue_task(&mut self, idx: usize, queue: String, payload: Value) {
        // `on_done` recorded the call that asked for the task as an attempt; the attempts
        // of a task step are its claims.
        self.run.steps[idx].attempts.pop();
        let spec = &self.wf.steps[idx];
        let attempt = self.run.steps[idx].attempts.len() as u32 + 1;
        let id = crate::ids::new(crate::ids::TASK);
        let task = NewTask {
            id: id.clone(),
            queue: queue.clone(),
            run_id: self.run.id.clone(),
            workflow_id: self.run.workflow_id.clone(),
            step: spec.name.clone(),
            attempt,
            payload,
            heartbeat_ms: spec.heartbeat.unwrap_or(DEFAULT_HEARTBEAT).as_millis() as u64,
            timeout_ms: spec.timeout.map(|t| t.as_millis() as u64),
            available_at: self.now(),
        };
        self.record_task(TaskOp::Enqueue(task));
        let message = format!("waiting for a worker on queue {queue:?} (task {id})");
        let waiting = Waiting::Task {
            task_id: id,
            queue,
            attempt,
        };
        self.run.steps[idx].output = None;
        self.wait_on(idx, waiting, message);
    }

    /// The step waiting for claim `attempt` of task `task_id`.
    fn task_step(&self, task_id: &str, attempt: u32) -> Option<usize> {
        self.run.steps.iter().position(|s| {
            s.status == StepStatus::Waiting
                && matches!(&s.waiting, Some(Waiting::Task { task_id: t, attempt: a, .. })
                    if t == task_id && *a == attempt)
        })
    }

    /// True when a step of this run waits for `task`'s current claim.
    pub fn waits_for_task(&self, task: &TaskRecord) -> bool {
        self.task_step(&task.id, task.attempt).is_some()
    }

    /// Applies `task`'s ended claim to the step waiting for it.
    pub fn task_ended(&mut self, task: &TaskRecord) -> Result<(), NotWaiting> {
        let idx = self.task_step(&task.id, task.attempt).ok_or_else(|| {
            NotWaiting(format!(
                "no step of run {} waits for attempt {} of task {}",
                self.run.id, task.attempt, task.id
            ))
        })?;
        let worker = task.worker.as_deref().unwrap_or("?");
        let mut attempt = Attempt {
            attempt: task.attempt,
            started_at: task.claimed_at.unwrap_or_else(|| self.now()),
            finished_at: Some(task.ended_at.unwrap_or_else(|| self.now())),
            error: None,
            http_code: None,
            retry_in_ms: None,
        };
        let took = attempt
            .finished_at
            .map(|f| (f - attempt.started_at).num_milliseconds())
            .unwrap_or_default();
        if task.status == TaskStatus::Completed {
            let mut output = task.output.clone().unwrap_or(Value::Null);
            self.redactor.redact(&mut output);
            let step = &mut self.run.steps[idx];
            step.attempts.push(attempt);
            step.waiting = None;
            step.output = Some(output);
            step.error = None;
            self.record_task(TaskOp::Settle {
                id: task.id.clone(),
            });
            let message = format!(
                "succeeded on attempt {} in {took} ms (worker {worker})",
                task.attempt
            );
            self.set_step(idx, StepStatus::Succeeded, LogLevel::Info, message);
        } else {
            let error = self
                .redactor
                .redact_str(task.error.as_deref().unwrap_or("the worker failed"));
            attempt.error = Some(format!("{error} (worker {worker})"));
            match self.task_retry(idx, task) {
                // The step keeps waiting: a parked run stays parked.
                Ok(delay) => {
                    self.retry_task(idx, task, attempt, delay);
                    return Ok(());
                }
                Err(why) => self.give_up_task(idx, task, attempt, why),
            }
        }
        self.resume_if_parked(&format!("task {} ended", task.id));
        Ok(())
    }

    /// The delay before the next claim of `task`, or why there is none. An expired lease
    /// is a failure of class `timeout` (retried when `retry_on` allows it); a worker's
    /// `fail` is retried unless it said `retryable: false`.
    fn task_retry(&self, idx: usize, task: &TaskRecord) -> Result<Duration, GiveUp> {
        let mut policy = self.wf.steps[idx].retry.clone();
        match task.status {
            TaskStatus::Expired => {}
            _ if !task.retryable => return Err(GiveUp::NotRetryable),
            // `retry_on` names transport classes; a worker's own failure is its own call.
            _ => policy.retry_on = None,
        }
        let failure = Failure {
            kind: FailureKind::Timeout,
            message: String::new(),
            http_code: None,
            retry_after: None,
            output: None,
        };
        let first = self.run.steps[idx]
            .attempts
            .first()
            .map(|a| a.started_at)
            .or(task.claimed_at)
            .unwrap_or_else(|| self.now());
        let elapsed = (self.now() - first).to_std().unwrap_or_default();
        next_delay(
            &policy,
            task.attempt,
            &failure,
            elapsed,
            rand::random::<f64>(),
        )
    }

    fn retry_task(&mut self, idx: usize, task: &TaskRecord, mut attempt: Attempt, delay: Duration) {
        let delay_ms = delay.as_millis() as u64;
        attempt.retry_in_ms = Some(delay_ms);
        let max = self.wf.steps[idx].retry.max + 1;
        let message = format!(
            "attempt {} of {max} failed: {}; the task goes back on queue {:?} in {delay_ms} ms",
            task.attempt,
            attempt.error.as_deref().unwrap_or("error"),
            task.queue
        );
        let next = task.attempt + 1;
        let step = &mut self.run.steps[idx];
        step.attempts.push(attempt);
        step.waiting = Some(Waiting::Task {
            task_id: task.id.clone(),
            queue: task.queue.clone(),
            attempt: next,
        });
        self.record_task(TaskOp::Retry {
            id: task.id.clone(),
            queue: task.queue.clone(),
            attempt: next,
            available_at: self.now() + chrono::Duration::milliseconds(delay_ms as i64),
        });
        self.touch_step(idx);
        self.log(LogLevel::Warn, Some(idx), message);
        self.event("step.retrying", Some(idx), StepStatus::Waiting.as_str());
    }

    fn give_up_task(&mut self, idx: usize, task: &TaskRecord, attempt: Attempt, why: GiveUp) {
        let policy = &self.wf.steps[idx].retry;
        let note = match why {
            GiveUp::Exhausted if policy.max > 0 => {
                format!(" (gave up after {} attempts)", task.attempt)
            }
            GiveUp::Deadline => format!(
                " (no time left for a retry within deadline_ms {})",
                policy.deadline_ms.unwrap_or_default()
            ),
            _ => String::new(),
        };
        let error = format!(
            "attempt {} failed: {}{note}",
            task.attempt,
            attempt.error.as_deref().unwrap_or("error")
        );
        let step = &mut self.run.steps[idx];
        step.attempts.push(attempt);
        step.waiting = None;
        self.record_task(TaskOp::Settle {
            id: task.id.clone(),
        });
        self.fail_step(idx, None, error, None);
    }

    /// Step `idx` stops waiting for its task for another reason than the task (the run was
    /// canceled, failed elsewhere, or stopped): the task is canceled with the same commit.
    pub(super) fn release_task(&mut self, idx: usize) {
        let step = &mut self.run.steps[idx];
        if let Some(Waiting::Task { task_id, queue, .. }) = step.waiting.take() {
            self.record_task(TaskOp::Cancel { id: task_id, queue });
        }
    }
}
