//! The attempts of one step: call the action, apply the per-attempt timeout, and retry by
//! the step's policy, reporting every attempt to the run's task as it ends.
//!
//! This future owns no run state. It is spawned per step and aborted (dropped) on cancel,
//! which drops any in-flight request and so closes its connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::failure_details::response_excerpt;
use super::retry::{GiveUp, next_delay};
use super::state::{Deferred, Rendered, Start, check_input_size};
use crate::actions::{Action, Effect, Failure, Outcome};
use crate::definition::RetryPolicy;
use crate::expr::Redactor;
use crate::metrics::StepMetrics;
use crate::model::{Attempt, now};
use crate::sandbox::Sandbox;
use crate::size;

/// What a step's attempts report to the run's task.
#[derive(Debug)]
pub enum StepEvent {
    /// An attempt failed and the step will be tried again after `retry_in_ms`;
    /// `response` is the start of what the downstream answered (secrets redacted).
    Retrying {
        index: usize,
        item: Option<usize>,
        attempt: Attempt,
        response: Option<String>,
    },
    /// The step is finished; `attempt` is its last attempt.
    Done {
        index: usize,
        item: Option<usize>,
        attempt: Attempt,
        result: Box<Result<Outcome, Failure>>,
    },
    /// The server is stopping and the step was between attempts: it stays `RUNNING` and
    /// goes on after the next start (its last attempt recorded when to retry).
    Paused { index: usize, item: Option<usize> },
    /// The step's deferred render found its `when` false.
    Skipped {
        index: usize,
        item: Option<usize>,
        reason: String,
    },
    /// The step's deferred render failed (a template error, a budget, a too large input);
    /// the step fails without an attempt, as it does when rendered in the run's task.
    Unrendered {
        index: usize,
        item: Option<usize>,
        error: String,
    },
}

/// What a step needs besides its [`Start`].
pub struct StepPlan {
    pub action: Arc<dyn Action>,
    /// Where heavy templates are evaluated.
    pub sandbox: Arc<Sandbox>,
    pub retry: RetryPolicy,
    pub timeout: Option<Duration>,
    pub metrics: StepMetrics,
    /// Outputs larger than this are truncated before they leave the step.
    pub max_output_bytes: usize,
}

/// Runs the attempts of one step until it succeeds, fails for good, or is dropped. Once
/// `stopping` is cancelled no attempt starts: an attempt in flight finishes, a wait for the
/// next one is given up ([`StepEvent::Paused`]).
pub async fn run(
    plan: StepPlan,
    mut start: Start,
    events: mpsc::UnboundedSender<StepEvent>,
    stopping: CancellationToken,
) {
    let index = start.index;
    let item = start.item;
    if let Some(deferred) = start.deferred.take() {
        let rendered = render(&plan, &deferred, start.max_input_bytes).await;
        match rendered {
            Ok(Rendered::Input(input)) => start.call.input = input,
            Ok(Rendered::Skipped(reason)) => {
                let _ = events.send(StepEvent::Skipped {
                    index,
                    item,
                    reason,
                });
                return;
            }
            Err(error) => {
                let error = start.redactor.redact_str(&error);
                let _ = events.send(StepEvent::Unrendered { index, item, error });
                return;
            }
        }
    }
    if let Some(at) = start.not_before
        && let Ok(wait) = (at - now()).to_std()
        && !pause(wait, &stopping).await
    {
        let _ = events.send(StepEvent::Paused { index, item });
        return;
    }
    let mut number = start.first_attempt;
    let began = std::time::Instant::now();
    loop {
        let started_at = now();
        let elapsed = (started_at - start.first_started)
            .to_std()
            .unwrap_or_default();
        let result = attempt(&plan, &start, elapsed).await;
        let mut record = Attempt {
            attempt: number,
            started_at,
            finished_at: Some(now()),
            error: None,
            http_code: None,
            retry_in_ms: None,
        };
        let failure = match result {
            Ok(mut outcome) => {
                record.http_code = outcome.http_code;
                redact_outcome(&start.redactor, &mut outcome);
                size::fit(&mut outcome.output, plan.max_output_bytes);
                plan.metrics.finished(began.elapsed());
                tracing::debug!(attempt = number, "step succeeded");
                let _ = events.send(StepEvent::Done {
                    index,
                    item,
                    attempt: record,
                    result: Box::new(Ok(outcome)),
                });
                return;
            }
            Err(failure) => failure,
        };
        record.error = Some(start.redactor.redact_str(&failure.message));
        record.http_code = failure.http_code;
        let elapsed = (now() - start.first_started).to_std().unwrap_or_default();
        match next_delay(
            &plan.retry,
            number,
            &failure,
            elapsed,
            rand::random::<f64>(),
        ) {
            Ok(delay) => {
                plan.metrics.retried();
                tracing::debug!(
                    attempt = number,
                    retry_in_ms = delay.as_millis() as u64,
                    error = record.error.as_deref().unwrap_or_default(),
                    "attempt failed; retrying"
                );
                record.retry_in_ms = Some(delay.as_millis() as u64);
                let response = failure
                    .output
                    .as_ref()
                    .and_then(response_excerpt)
                    .map(|text| start.redactor.redact_str(&text));
                if events
                    .send(StepEvent::Retrying {
                        index,
                        item,
                        attempt: record,
                        response,
                    })
                    .is_err()
                {
                    return;
                }
                if !pause(delay, &stopping).await {
                    let _ = events.send(StepEvent::Paused { index, item });
                    return;
                }
                number += 1;
            }
            Err(why) => {
                let mut failure = explain(failure, why, &plan.retry, number);
                failure.message = start.redactor.redact_str(&failure.message);
                if let Some(output) = &mut failure.output {
                    start.redactor.redact(output);
                    size::fit(output, plan.max_output_bytes);
                }
                plan.metrics.finished(began.elapsed());
                tracing::debug!(attempt = number, error = %failure.message, "step failed");
                let _ = events.send(StepEvent::Done {
                    index,
                    item,
                    attempt: record,
                    result: Box::new(Err(failure)),
                });
                return;
            }
        }
    }
}

/// Finishes a deferred render: the heavy parts in the sandbox (within the step's timeout
/// too), the rest here; the error is the message the step fails with.
async fn render(
    plan: &StepPlan,
    deferred: &Deferred,
    max_input_bytes: usize,
) -> Result<Rendered, String> {
    let (parts, scope) = deferred.request();
    let evaluate = plan.sandbox.evaluate(parts, scope);
    let values = match plan.timeout {
        Some(limit) => match tokio::time::timeout(limit, evaluate).await {
            Ok(values) => values,
            Err(_) => {
                return Err(format!(
                    "timed out after {} ms while rendering its input",
                    limit.as_millis()
                ));
            }
        },
        None => evaluate.await,
    }
    .map_err(|e| format!("input template failed: {e}"))?;
    let rendered = deferred
        .finish(values)
        .map_err(|e| format!("input template failed: {e}"))?;
    if let Rendered::Input(input) = &rendered {
        check_input_size(input, max_input_bytes)?;
    }
    Ok(rendered)
}

/// Waits `delay`; false when the server began to stop first (or had already).
async fn pause(delay: Duration, stopping: &CancellationToken) -> bool {
    if stopping.is_cancelled() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stopping.cancelled() => false,
    }
}

/// Removes secret values from what a step produced before it is stored.
fn redact_outcome(redactor: &Redactor, outcome: &mut Outcome) {
    if redactor.is_empty() {
        return;
    }
    redactor.redact(&mut outcome.output);
    if let Effect::MergeContext(values) = &mut outcome.effect {
        values.values_mut().for_each(|v| redactor.redact(v));
    }
}

/// One call with the per-attempt timeout, shortened to what `deadline_ms` leaves.
async fn attempt(plan: &StepPlan, start: &Start, elapsed: Duration) -> Result<Outcome, Failure> {
    let mut timeout = plan.timeout.or_else(|| plan.action.default_timeout());
    if let Some(deadline) = plan.retry.deadline_ms.map(Duration::from_millis) {
        let left = deadline.saturating_sub(elapsed);
        timeout = Some(timeout.map_or(left, |t| t.min(left)));
    }
    let call = plan.action.execute(start.call.clone());
    match timeout {
        None => call.await,
        Some(limit) => tokio::time::timeout(limit, call)
            .await
            .unwrap_or_else(|_| Err(Failure::timed_out(limit))),
    }
}

/// Adds why the step gives up to a retryable failure's message.
fn explain(mut failure: Failure, why: GiveUp, policy: &RetryPolicy, attempts: u32) -> Failure {
    match why {
        GiveUp::NotRetryable => {}
        GiveUp::Exhausted if policy.max > 0 => {
            failure.message = format!("{} (gave up after {attempts} attempts)", failure.message);
        }
        GiveUp::Exhausted => {}
        GiveUp::Deadline => {
            failure.message = format!(
                "{} (no time left for a retry within deadline_ms {})",
                failure.message,
                policy.deadline_ms.unwrap_or_default()
            );
        }
    }
    failure
}
