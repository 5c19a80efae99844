//! Decisions from outside the run: approve, reject, cancel, events sent to it, the end of
//! a child run, and the passing of time (approval timeouts, timers, event timeouts).
//!
//! A decision is applied to a [`RunState`] like any other change; whoever holds the state
//! (the run's own task, or a caller that read a parked run from the store) commits the
//! result under a guard, so a decision is recorded exactly once.

use serde_json::Value;

use super::state::{EventRefusal, RunState};
use crate::model::{Approval, Decision, LogLevel, RunStatus, StepStatus};
use crate::problems::Violation;

/// A decision about a run.
#[derive(Debug, Clone)]
pub enum Intervention {
    Approve {
        step: Option<String>,
        by: String,
        comment: Option<String>,
        input: Option<Value>,
    },
    Reject {
        step: Option<String>,
        by: String,
        comment: Option<String>,
    },
    Cancel {
        by: String,
    },
    /// Apply what is due: `on_timeout` of approvals, timers, event timeouts.
    Tick,
    /// `POST /v1/runs/{id}/events/{name}`.
    Event {
        name: String,
        data: Value,
        by: String,
    },
    /// A child run of one of the run's steps ended.
    ChildEnded {
        run_id: String,
        status: RunStatus,
        context: serde_json::Map<String, Value>,
        error: Option<String>,
    },
    /// A worker's claim on a task of the run ended (completed, failed or expired).
    TaskEnded(Box<crate::store::tasks::TaskRecord>),
}

/// Why a decision was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The run is not in a state this decision applies to: 409.
    #[error("{0}")]
    Conflict(String),
    /// The decision's own content is wrong (unknown step, input against the schema): 400.
    #[error("{message}")]
    Invalid {
        message: String,
        violations: Vec<Violation>,
    },
}

impl RunState {
    /// Applies `request`, recording its changes for the next commit.
    pub fn decide(&mut self, request: Intervention) -> Result<(), Refusal> {
        if self.run.status.is_terminal() {
            return Err(Refusal::Conflict(format!(
                "run {} is already {}",
                self.run.id, self.run.status
            )));
        }
        match request {
            Intervention::Cancel { by } => {
                let reason = format!("canceled by {by}");
                self.abort_running(&reason);
                self.finish(RunStatus::Canceled, Some(reason));
                Ok(())
            }
            Intervention::Approve {
                step,
                by,
                comment,
                input,
            } => {
                let idx = self.waiting_step(step.as_deref())?;
                self.check_input(idx, input.as_ref())?;
                self.approve(idx, by, comment, input)
            }
            Intervention::Reject { step, by, comment } => {
                let idx = self.waiting_step(step.as_deref())?;
                self.reject(idx, by, comment);
                Ok(())
            }
            Intervention::Tick => self.tick(),
            Intervention::Event { name, data, by } => {
                self.receive_event(&name, data, &by).map_err(|e| match e {
                    EventRefusal::NoStep(why) => Refusal::Conflict(why),
                    EventRefusal::Invalid {
                        message,
                        violations,
                    } => Refusal::Invalid {
                        message,
                        violations,
                    },
                })?;
                self.resume_if_parked(&format!("event {name:?} arrived"));
                Ok(())
            }
            Intervention::TaskEnded(task) => self
                .task_ended(&task)
                .map_err(|super::state::NotWaiting(why)| Refusal::Conflict(why)),
            Intervention::ChildEnded {
                run_id,
                status,
                context,
                error,
            } => {
                if !self.child_ended(&run_id, status, &context, error.as_deref()) {
                    return Err(Refusal::Conflict(format!(
                        "no step of run {} waits for child run {run_id}",
                        self.run.id
                    )));
                }
                self.resume_if_parked(&format!("child run {run_id} ended"));
                Ok(())
            }
        }
    }

    /// Applies what is due now. When nothing is (a parked run's periodic check of its
    /// child runs), the run's next wake-up is moved on instead, so that it is not read
    /// again at every poll; `Conflict` when even that did not change.
    fn tick(&mut self) -> Result<(), Refusal> {
        let waits = self.fire_due_waits();
        let approvals = self.time_out().is_ok();
        if !(waits || approvals) {
            if self.rearm_wake() {
                return Ok(());
            }
            return Err(Refusal::Conflict("nothing is due".into()));
        }
        self.resume_if_parked("a timer or timeout came due");
        Ok(())
    }

    /// The waiting step a decision is about: the named one, or the first waiting.
    fn waiting_step(&self, name: Option<&str>) -> Result<usize, Refusal> {
        let steps = &self.run.steps;
        let Some(name) = name else {
            return steps
                .iter()
                .position(|s| s.status == StepStatus::WaitingApproval)
                .ok_or_else(|| {
                    Refusal::Conflict(format!(
                        "run {} is {}, not waiting for approval",
                        self.run.id, self.run.status
                    ))
                });
        };
        let idx = steps
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| Refusal::Invalid {
                message: format!("run {} has no step {name:?}", self.run.id),
                violations: vec![Violation::new("/step", format!("no step named {name:?}"))],
            })?;
        if steps[idx].status != StepStatus::WaitingApproval {
            let decided = self.run.approvals.iter().rev().find(|a| a.step == name);
            let detail = match decided {
                Some(a) => format!(" ({} by {} at {})", a.decision, a.by, a.at.to_rfc3339()),
                None => String::new(),
            };
            return Err(Refusal::Conflict(format!(
                "step {name:?} is {}, not waiting for approval{detail}",
                steps[idx].status
            )));
        }
        Ok(idx)
    }

    fn check_input(&self, idx: usize, input: Option<&Value>) -> Result<(), Refusal> {
        let Some(input) = input else { return Ok(()) };
        if !input.is_object() {
            return Err(Refusal::Invalid {
                message: "approval input must be a JSON object (it is merged into the context)"
                    .into(),
                violations: vec![Violation::new("/input", "expected an object")],
            });
        }
        let schema = self.wf.steps[idx]
            .approval
            .as_ref()
            .and_then(|a| a.input_schema.as_ref());
        let violations: Vec<Violation> = schema
            .map(|s| {
                s.iter_errors(input)
                    .map(|e| Violation::new(format!("/input{}", e.instance_path()), e.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Refusal::Invalid {
                message: "approval input does not match the step's approval.input_schema".into(),
                violations,
            })
        }
    }

    fn record(
        &mut self,
        idx: usize,
        decision: Decision,
        by: String,
        comment: Option<String>,
        input: Option<Value>,
    ) {
        let approval = Approval {
            step: self.run.steps[idx].name.clone(),
            decision,
            by,
            at: self.now(),
            comment,
            input,
        };
        self.record_approval(approval);
    }

    fn approve(
        &mut self,
        idx: usize,
        by: String,
        comment: Option<String>,
        input: Option<Value>,
    ) -> Result<(), Refusal> {
        if let Some(Value::Object(values)) = &input {
            self.merge_context(values.clone()).map_err(|size| {
                let message = format!(
                    "the approval input would grow the run's context to {size} bytes, over \
                     limits.max_context_bytes ({})",
                    self.context_limit()
                );
                Refusal::Invalid {
                    violations: vec![Violation::new("/input", message.clone())],
                    message,
                }
            })?;
        }
        let note = comment
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        self.record(idx, Decision::Approved, by.clone(), comment, input);
        self.set_step(
            idx,
            StepStatus::Pending,
            LogLevel::Info,
            format!("approved by {by}{note}"),
        );
        let why = format!("approval of {:?}", self.run.steps[idx].name);
        self.resume_if_parked(&why);
        Ok(())
    }

    fn reject(&mut self, idx: usize, by: String, comment: Option<String>) {
        let note = comment
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        let name = self.run.steps[idx].name.clone();
        self.record(idx, Decision::Rejected, by.clone(), comment, None);
        let error = format!("rejected by {by}{note}");
        self.run.steps[idx].error = Some(error.clone());
        self.set_step(idx, StepStatus::Failed, LogLevel::Error, error);
        let reason = format!("step {name:?} was rejected by {by}{note}");
        self.abort_running(&reason);
        self.finish(RunStatus::Failed, Some(reason));
    }

    fn time_out(&mut self) -> Result<(), Refusal> {
        let at = self.now();
        let due: Vec<usize> = (0..self.run.steps.len())
            .filter(|&i| {
                let s = &self.run.steps[i];
                let timeout = self.wf.steps[i].approval.as_ref().and_then(|a| a.timeout);
                match (
                    s.status,
                    s.waiting_since,
                    timeout.and_then(|t| chrono::Duration::from_std(t).ok()),
                ) {
                    (StepStatus::WaitingApproval, Some(since), Some(t)) => since + t <= at,
                    _ => false,
                }
            })
            .collect();
        if due.is_empty() {
            return Err(Refusal::Conflict("no approval has timed out".into()));
        }
        for idx in due {
            if self.run.status.is_terminal() {
                break;
            }
            let Some(policy) = self.wf.steps[idx].approval.clone() else {
                continue;
            };
            let after = policy.timeout.map(|t| t.as_millis()).unwrap_or_default();
            let comment = Some(format!("approval timed out after {after} ms"));
            match policy.on_timeout {
                // Without input there is nothing to merge, so approving cannot be refused.
                Decision::Approved => self.approve(idx, "system".into(), comment, None)?,
                Decision::Rejected => self.reject(idx, "system".into(), comment),
            }
        }
        Ok(())
    }
}
