//! Steps that wait (`WAITING`) for something outside the run: a time (`wait`), an event
//! sent to the run (`event`), or a child run (`workflow`). A run whose only open steps
//! wait parks (`WAITING`, or `WAITING_APPROVAL` when an approval is pending too) and holds
//! no task; its `wake_at` is the earliest time something must happen to it.
//!
//! Events that arrive before their step waits are kept on the run, oldest first, and
//! taken one per waiting step.

use std::time::Duration;

use serde_json::{Value, json};

use super::RunState;
use crate::actions::Parking;
use crate::model::{KeptEvent, LogLevel, RunStatus, StepStatus, Timestamp, Waiting};
use crate::problems::Violation;

/// While a parent waits on a child run, the child is checked this often (a safety net for
/// a notice lost in a crash).
pub const CHILD_CHECK: Duration = Duration::from_secs(300);

/// Most events one run keeps for steps that do not wait yet.
pub const MAX_KEPT_EVENTS: usize = 64;

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum EventRefusal {
    /// No step of the run waits, or will wait, for this event: `409`.
    NoStep(String),
    /// The data does not match the step's `schema`: `400`.
    Invalid {
        message: String,
        violations: Vec<Violation>,
    },
}

impl RunState {
    /// A step's action asked to wait: record what for. An event kept earlier is taken at
    /// once. (A child run is started by the runner first, see [`Self::wait_for_child`].)
    pub fn park_step(&mut self, idx: usize, parking: Parking) {
        match parking {
            Parking::Timer { until } => {
                let message = format!("waiting until {}", until.to_rfc3339());
                self.wait_on(idx, Waiting::Timer { until }, message);
            }
            Parking::Event { name, timeout } => {
                if let Some(kept) = self.take_kept_event(&name) {
                    let message = format!(
                        "event {name:?} taken (it arrived at {} from {})",
                        kept.at.to_rfc3339(),
                        kept.by
                    );
                    self.event_arrived(idx, kept.data, message);
                    return;
                }
                let until = timeout
                    .and_then(|t| chrono::Duration::from_std(t).ok())
                    .map(|t| self.now() + t);
                let message = format!("waiting for event {name:?}");
                self.wait_on(idx, Waiting::Event { name, until }, message);
            }
            Parking::Child { .. } => {
                // The runner starts the child and calls wait_for_child; reaching here means
                // it could not, and has failed the step instead.
            }
            Parking::Task { queue, payload } => self.enqueue_task(idx, queue, payload),
        }
    }

    /// The child run `run_id` was started for step `idx`.
    pub fn wait_for_child(&mut self, idx: usize, run_id: String) {
        let message = format!("waiting for child run {run_id}");
        self.wait_on(idx, Waiting::Child { run_id }, message);
    }

    pub(super) fn wait_on(&mut self, idx: usize, waiting: Waiting, message: String) {
        self.run.steps[idx].waiting = Some(waiting);
        self.set_step(idx, StepStatus::Waiting, LogLevel::Info, message);
    }

    /// When something must happen to this run by itself: its earliest approval timeout,
    /// timer, event timeout, or check of a child run.
    pub fn next_wake(&self) -> Option<Timestamp> {
        let child_check = chrono::Duration::from_std(CHILD_CHECK).unwrap_or_default();
        let waits = self
            .run
            .steps
            .iter()
            .filter_map(|s| match (&s.status, &s.waiting) {
                (StepStatus::Waiting, Some(Waiting::Timer { until })) => Some(*until),
                (StepStatus::Waiting, Some(Waiting::Event { until, .. })) => *until,
                (StepStatus::Waiting, Some(Waiting::Child { .. })) => {
                    Some(self.now() + child_check)
                }
                _ => None,
            });
        waits.chain(self.approval_deadline()).min()
    }

    /// Moves a parked run's `wake_at` to its next wake-up; false when it did not change.
    pub(in crate::engine) fn rearm_wake(&mut self) -> bool {
        let next = self.next_wake();
        if !self.run.status.is_parked() || next == self.run.control.wake_at {
            return false;
        }
        self.run.control.wake_at = next;
        self.touch_head();
        true
    }

    /// The child runs steps of this run wait for.
    pub fn children(&self) -> Vec<String> {
        self.run
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Waiting)
            .filter_map(|s| match &s.waiting {
                Some(Waiting::Child { run_id }) => Some(run_id.clone()),
                _ => None,
            })
            .collect()
    }

    /// Applies the timers and event timeouts that are due; true when one was.
    pub fn fire_due_waits(&mut self) -> bool {
        let at = self.now();
        let mut fired = false;
        for idx in 0..self.run.steps.len() {
            let step = &self.run.steps[idx];
            if step.status != StepStatus::Waiting {
                continue;
            }
            match step.waiting.clone() {
                Some(Waiting::Timer { until }) if until <= at => {
                    fired = true;
                    self.set_step(
                        idx,
                        StepStatus::Succeeded,
                        LogLevel::Info,
                        "the wait is over",
                    );
                }
                Some(Waiting::Event {
                    name,
                    until: Some(until),
                }) if until <= at => {
                    fired = true;
                    let waited = self.run.steps[idx]
                        .waiting_since
                        .map(|s| (until - s).num_milliseconds())
                        .unwrap_or_default();
                    let error = format!("event {name:?} did not arrive within {waited} ms");
                    self.fail_step(idx, None, error, None);
                }
                _ => {}
            }
        }
        fired
    }

    /// An event sent to the run: the first step waiting for it takes it; otherwise it is
    /// kept for the step that will (when one will). Data is checked against that step's
    /// `schema` either way.
    pub fn receive_event(&mut self, name: &str, data: Value, by: &str) -> Result<(), EventRefusal> {
        let waiting = (0..self.run.steps.len()).find(|&i| {
            let s = &self.run.steps[i];
            s.status == StepStatus::Waiting
                && matches!(&s.waiting, Some(Waiting::Event { name: n, .. }) if n == name)
        });
        let consumer = waiting.or_else(|| {
            (0..self.run.steps.len()).find(|&i| {
                !self.run.steps[i].status.is_finished() && self.event_step_name(i) == Some(name)
            })
        });
        let Some(idx) = consumer else {
            return Err(EventRefusal::NoStep(format!(
                "no open step of run {} waits for event {name:?}",
                self.run.id
            )));
        };
        self.check_event(idx, &data)?;
        let size = crate::size::json_len(&data);
        let max = self.limits.max_output_bytes;
        if size > max {
            return Err(EventRefusal::Invalid {
                message: format!(
                    "the event's data is {size} bytes, over limits.max_output_bytes ({max})"
                ),
                violations: vec![Violation::new("/data", "too large")],
            });
        }
        let kept = &self.run.control.extra.events;
        let kept_bytes: usize = kept.iter().map(|e| crate::size::json_len(&e.data)).sum();
        if waiting.is_none()
            && (kept.len() >= MAX_KEPT_EVENTS || kept_bytes + size > self.limits.max_context_bytes)
        {
            return Err(EventRefusal::NoStep(format!(
                "run {} already keeps {} events ({kept_bytes} bytes) for steps that do not \
                 wait yet; at most {MAX_KEPT_EVENTS} and limits.max_context_bytes in all",
                self.run.id,
                kept.len()
            )));
        }
        match waiting {
            Some(idx) => {
                let message = format!("event {name:?} received from {by} ({size} bytes)");
                self.event_arrived(idx, data, message);
            }
            None => {
                let step = self.run.steps[idx].name.clone();
                self.run.control.extra.events.push(KeptEvent {
                    name: name.to_owned(),
                    data,
                    at: self.now(),
                    by: by.to_owned(),
                });
                self.touch_head();
                self.log(
                    LogLevel::Info,
                    None,
                    format!(
                        "event {name:?} received from {by} ({size} bytes); kept for step {step:?}"
                    ),
                );
            }
        }
        Ok(())
    }

    fn event_arrived(&mut self, idx: usize, data: Value, message: String) {
        self.run.steps[idx].output = Some(data);
        self.set_step(idx, StepStatus::Succeeded, LogLevel::Info, message);
    }

    /// The event name step `idx` waits for, when it is an `event` step.
    fn event_step_name(&self, idx: usize) -> Option<&str> {
        let step = &self.wf.steps[idx];
        if step.action_name != "event" {
            return None;
        }
        step.input.literal_field("name")?.as_str()
    }

    fn check_event(&self, idx: usize, data: &Value) -> Result<(), EventRefusal> {
        let Some(schema) = self.wf.steps[idx].input.literal_field("schema") else {
            return Ok(());
        };
        let Ok(validator) = jsonschema::validator_for(schema) else {
            return Ok(());
        };
        let violations: Vec<Violation> = validator
            .iter_errors(data)
            .map(|e| Violation::new(format!("/data{}", e.instance_path()), e.to_string()))
            .collect();
        if violations.is_empty() {
            return Ok(());
        }
        Err(EventRefusal::Invalid {
            message: format!(
                "the event's data does not match the schema of step {:?}",
                self.run.steps[idx].name
            ),
            violations,
        })
    }

    fn take_kept_event(&mut self, name: &str) -> Option<KeptEvent> {
        let events = &mut self.run.control.extra.events;
        let at = events.iter().position(|e| e.name == name)?;
        let kept = events.remove(at);
        self.touch_head();
        Some(kept)
    }

    /// Child run `run_id` ended: the step waiting for it succeeds when it succeeded, and
    /// fails otherwise. False when no step waits for it (already decided).
    pub fn child_ended(
        &mut self,
        run_id: &str,
        status: RunStatus,
        context: &serde_json::Map<String, Value>,
        error: Option<&str>,
    ) -> bool {
        let Some(idx) = (0..self.run.steps.len()).find(|&i| {
            let s = &self.run.steps[i];
            s.status == StepStatus::Waiting
                && matches!(&s.waiting, Some(Waiting::Child { run_id: r }) if r == run_id)
        }) else {
            return false;
        };
        let output = json!({"run_id": run_id, "status": status, "context": context});
        if status == RunStatus::Succeeded {
            self.run.steps[idx].output = Some(output);
            let message = format!("child run {run_id} succeeded");
            self.set_step(idx, StepStatus::Succeeded, LogLevel::Info, message);
        } else {
            let why = error.map(|e| format!(": {e}")).unwrap_or_default();
            let error = format!("child run {run_id} ended {status}{why}");
            self.fail_step(idx, None, error, Some(output));
        }
        true
    }

    /// What the parked run waits for, for its log.
    pub(super) fn waiting_for(&self) -> String {
        let mut parts = Vec::new();
        for s in &self.run.steps {
            match (&s.status, &s.waiting) {
                (StepStatus::WaitingApproval, _) => parts.push(format!("approval of {}", s.name)),
                (StepStatus::Waiting, Some(Waiting::Timer { until })) => {
                    parts.push(format!("{} until {}", s.name, until.to_rfc3339()))
                }
                (StepStatus::Waiting, Some(Waiting::Event { name, .. })) => {
                    parts.push(format!("event {name:?} ({})", s.name))
                }
                (StepStatus::Waiting, Some(Waiting::Child { run_id })) => {
                    parts.push(format!("child run {run_id} ({})", s.name))
                }
                (StepStatus::Waiting, Some(Waiting::Task { queue, .. })) => {
                    parts.push(format!("a worker on queue {queue:?} ({})", s.name))
                }
                _ => {}
            }
        }
        parts.join(", ")
    }
}
