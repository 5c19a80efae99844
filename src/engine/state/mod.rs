//! The in-memory state of one run and the rules that move it. Pure and synchronous: the
//! runner drives it, starts the steps it asks for, feeds it their results, and commits
//! what it recorded. Time comes from a [`Clock`], so the rules can be tested without
//! waiting.
//!
//! Three jobs, one file each: [`record`] keeps every change for the next commit (a
//! [`crate::store::Transition`]); [`scope`] keeps what templates see (`context`,
//! `steps.<name>`) in line with the run; [`rules`] and [`results`] decide what happens
//! next (scheduling, skipping, parking, finishing, applying step results).

mod budget;
mod foreach;
mod quarantine;
#[cfg(test)]
mod quarantine_tests;
mod record;
mod render;
mod rerun;
mod results;
mod rules;
mod scope;
#[cfg(test)]
mod task_tests;
mod tasks;
#[cfg(test)]
mod tests;
mod waits;

use std::sync::Arc;

use super::{RunLimits, Settings};
use crate::actions::Call;
use crate::clock::Clock;
use crate::definition::Workflow;
use crate::expr::Redactor;
use crate::model::{Run, RunStatus, Timestamp};

use record::Changes;
use scope::ScopeCache;

pub use budget::{count_tokens, effective as effective_budget};
pub use render::{Deferred, Rendered, check_input_size};
pub use tasks::{DEFAULT_HEARTBEAT, NotWaiting};
pub use waits::EventRefusal;

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
    /// The input still to render (in the step's task) when part of it is heavy; `call.input`
    /// is then `null` until it is.
    pub deferred: Option<Deferred>,
    /// A rendered input larger than this fails the step.
    pub max_input_bytes: usize,
    /// The item of a `foreach` step this start is for.
    pub item: Option<usize>,
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
    clock: Clock,
    limits: RunLimits,
    redactor: Redactor,
    scope: ScopeCache,
    changes: Changes,
    /// Set when a step failed the run: the error the run ends with.
    pub failure: Option<String>,
    /// Set when a condition stopped the run: the step that did.
    pub stopped_by: Option<String>,
    /// Child runs the run no longer waits for (it ended, or the step gave up): the runner
    /// cancels them once this state is committed.
    abandoned: Vec<String>,
    /// Where the running `foreach` steps are.
    foreach: foreach::Foreach,
}

impl RunState {
    pub fn new(run: Run, wf: Arc<Workflow>, settings: &Settings) -> Self {
        let (failure, stopped_by) = rules::outcome_so_far(&run, &wf);
        Self {
            scope: ScopeCache::new(&run, settings.secrets.clone()),
            changes: Changes::default(),
            run,
            wf,
            clock: settings.clock.clone(),
            limits: settings.limits,
            redactor: settings.redactor.clone(),
            failure,
            stopped_by,
            abandoned: Vec::new(),
            foreach: foreach::Foreach::default(),
        }
    }

    /// The child runs abandoned since the last call, to cancel.
    pub fn take_abandoned(&mut self) -> Vec<String> {
        std::mem::take(&mut self.abandoned)
    }

    /// The child run step `idx` waits for.
    fn child_of(&self, idx: usize) -> Option<String> {
        let step = &self.run.steps[idx];
        match (&step.status, &step.waiting) {
            (crate::model::StepStatus::Waiting, Some(crate::model::Waiting::Child { run_id })) => {
                Some(run_id.clone())
            }
            _ => None,
        }
    }

    /// The current time by this run's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The largest context this run may have, in bytes.
    pub fn context_limit(&self) -> usize {
        self.limits.max_context_bytes
    }
}
