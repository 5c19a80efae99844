//! Recording: every change to a run is kept until it is committed, in the rows it touches
//! and in a log entry (with a [`StatusChange`] when a status moved, and an event for the
//! outbox that hooks and the events feed read), so the log alone tells the story of a run. [`RunState::pending`] turns
//! what was recorded into one [`Transition`].

use std::collections::BTreeSet;

use super::RunState;
use crate::model::{
    Approval, LogLevel, NewEvent, NewLogEntry, RunStatus, StatusChange, StepStatus, Timestamp,
};
use crate::store::{Guard, OwnerChange, Rerun, RunHead, TaskOp, Transition};

/// What changed since the last commit.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Step rows changed, by index.
    steps: BTreeSet<usize>,
    /// Item results and starts of `foreach` steps recorded.
    items: usize,
    /// Something other than `foreach` item progress changed.
    other: bool,
    head: bool,
    context: bool,
    /// A re-run changed the history, version or budget.
    rerun: bool,
    approvals: Vec<Approval>,
    logs: Vec<NewLogEntry>,
    events: Vec<NewEvent>,
    tasks: Vec<TaskOp>,
}

impl RunState {
    /// A log entry stamped by the run's clock.
    fn entry(&self, level: LogLevel, step: Option<usize>, message: String) -> NewLogEntry {
        let name = step.map(|i| self.run.steps[i].name.as_str());
        let mut entry = NewLogEntry::engine(level, name, message);
        entry.ts = self.now();
        entry
    }

    /// Adds a log entry about the run, or about step `step`.
    pub fn log(&mut self, level: LogLevel, step: Option<usize>, message: impl Into<String>) {
        let entry = self.entry(level, step, message.into());
        self.changes.logs.push(entry);
        self.changes.other = true;
    }

    /// Adds an event for the outbox (hooks and the events feed read it).
    pub(super) fn event(&mut self, kind: &str, step: Option<usize>, status: &str) {
        let event = NewEvent {
            kind: kind.to_owned(),
            step: step.map(|i| self.run.steps[i].name.clone()),
            status: status.to_owned(),
            ts: self.now(),
        };
        self.changes.events.push(event);
        self.changes.other = true;
    }

    /// Marks step `idx`'s row as changed (its attempts, output or error).
    pub(super) fn touch_step(&mut self, idx: usize) {
        self.changes.steps.insert(idx);
        self.changes.other = true;
    }

    /// Marks step `idx`'s row as changed by the progress of one of its items.
    pub(super) fn touch_item(&mut self, idx: usize) {
        self.changes.steps.insert(idx);
        self.changes.items += 1;
    }

    /// True when all that changed since the last commit is the progress of fewer than
    /// `items` `foreach` items: the commit may wait for more (a crash before it only runs
    /// those items again).
    pub fn only_items_below(&self, items: usize) -> bool {
        !self.changes.other && self.changes.items < items
    }

    /// Marks the run's head (status, timings, usage) as changed.
    pub(super) fn touch_head(&mut self) {
        self.changes.head = true;
        self.changes.other = true;
    }

    /// Marks the context as changed.
    pub(super) fn touch_context(&mut self) {
        self.changes.context = true;
        self.changes.other = true;
    }

    /// Marks the re-run history, version and budget as changed.
    pub(super) fn touch_rerun(&mut self) {
        self.changes.rerun = true;
    }

    /// Records an approval decision on the run.
    pub(in crate::engine) fn record_approval(&mut self, approval: Approval) {
        self.run.approvals.push(approval.clone());
        self.changes.approvals.push(approval);
        self.changes.other = true;
    }

    /// Moves step `idx` to `status`, logging `message` with the change.
    pub fn set_step(
        &mut self,
        idx: usize,
        status: StepStatus,
        level: LogLevel,
        message: impl Into<String>,
    ) {
        let at = self.now();
        if status.is_finished() && self.run.steps[idx].items.is_some() {
            self.close_items(idx);
        }
        if status != StepStatus::Waiting {
            self.release_task(idx);
        }
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
        let entry = self.entry(level, Some(idx), message.into());
        self.changes.logs.push(entry.with_status(change));
        self.touch_step(idx);
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
        self.touch_head();
        let change = StatusChange {
            run_status: status,
            step: None,
            step_status: None,
        };
        let entry = self.entry(level, None, message.into());
        self.changes.logs.push(entry.with_status(change));
        let first_start = status == RunStatus::Running && self.run.started_at.is_none();
        let kind = match status {
            RunStatus::Running if first_start => Some("run.started"),
            RunStatus::WaitingApproval => Some("run.waiting_approval"),
            RunStatus::Waiting => Some("run.waiting"),
            RunStatus::Succeeded => Some("run.succeeded"),
            RunStatus::Failed => Some("run.failed"),
            RunStatus::Canceled => Some("run.canceled"),
            _ => None,
        };
        if let Some(kind) = kind {
            self.event(kind, None, status.as_str());
        }
        if first_start {
            self.run.started_at = Some(self.now());
        }
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
            self.touch_head();
        }
    }

    /// The changes recorded since the last commit as one transition, or `None` when
    /// nothing changed. The record is kept until [`Self::committed`], so that a commit the
    /// store could not make is built again rather than copied in advance.
    pub fn pending(&self, guard: Guard, owner: OwnerChange) -> Option<Transition> {
        let changes = &self.changes;
        let mut tx = Transition::new(self.run.id.clone(), guard);
        tx.owner = owner;
        if changes.head || !changes.steps.is_empty() {
            tx.head = Some(RunHead::of(&self.run));
        }
        if changes.context {
            tx.context = Some(self.run.context.clone());
        }
        if changes.rerun {
            tx.rerun = Some(Rerun {
                retries: self.run.retries.clone(),
                workflow_version: self.run.workflow_version,
                budget: self.run.budget,
                steps: self.run.steps.len(),
            });
        }
        tx.steps = changes
            .steps
            .iter()
            .map(|&i| (i, self.run.steps[i].clone()))
            .collect();
        tx.approvals = changes.approvals.clone();
        tx.logs = changes.logs.clone();
        tx.events = changes.events.clone();
        tx.tasks = changes.tasks.clone();
        (!tx.is_empty()).then_some(tx)
    }

    /// Records a change to a task row, written with the next commit.
    pub(super) fn record_task(&mut self, op: TaskOp) {
        self.changes.tasks.push(op);
        self.changes.other = true;
    }

    /// Forgets the recorded changes, now committed at revision `rev` at time `at` (the
    /// store's `updated_at`), so that the run in memory is the run as stored.
    pub fn committed(&mut self, rev: u64, at: Timestamp) {
        self.changes = Changes::default();
        self.run.control.rev = rev;
        self.run.updated_at = at;
    }

    /// True when nothing was recorded since the last commit: the run in memory is the
    /// run as stored.
    pub fn is_committed(&self) -> bool {
        let Changes {
            steps,
            items,
            other,
            head,
            context,
            rerun,
            approvals,
            logs,
            events,
            tasks,
        } = &self.changes;
        steps.is_empty()
            && *items == 0
            && !other
            && !head
            && !context
            && !rerun
            && approvals.is_empty()
            && logs.is_empty()
            && events.is_empty()
            && tasks.is_empty()
    }

    /// The served members the recorded changes rewrite: the steps (by index), whether
    /// the context, and whether a re-run replaced the steps.
    pub fn rewritten(&self) -> (impl Iterator<Item = usize> + '_, bool, bool) {
        let changes = &self.changes;
        (
            changes.steps.iter().copied(),
            changes.context,
            changes.rerun,
        )
    }

    /// The log entries recorded since the last commit (for tests and metrics).
    pub fn recorded_logs(&self) -> &[NewLogEntry] {
        &self.changes.logs
    }
}
