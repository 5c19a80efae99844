//! What templates of a run see: `context`, `steps.<name>` (finished steps only), `run` and
//! `secrets`. Converted to template values once and kept in line with the run as steps
//! finish and the context changes, so rendering a step does not convert the whole run.

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::value::Value as MjValue;
use serde_json::{Map, Value};

use super::RunState;
use crate::expr::{self, Scope, Secrets};
use crate::model::{Run, StepRun};
use crate::secret::Secret;
use crate::size::json_len;

/// The template values of one run.
pub(super) struct ScopeCache {
    secrets: Arc<BTreeMap<String, Secret>>,
    /// `steps` of the scope: the finished steps by name. Shared with the scopes handed out;
    /// changed in place when none of them is still alive (a deferred render may be), else
    /// copied first.
    step_scopes: Arc<BTreeMap<String, MjValue>>,
    context: MjValue,
    /// The context handed to actions (read-only), shared rather than copied per step.
    pub shared_context: Arc<Map<String, Value>>,
}

impl ScopeCache {
    pub fn new(run: &Run, secrets: Arc<BTreeMap<String, Secret>>) -> Self {
        let step_scopes: BTreeMap<String, MjValue> = run
            .steps
            .iter()
            .filter(|s| s.status.is_finished())
            .map(|s| (s.name.clone(), scope_of(s)))
            .collect();
        Self {
            secrets,
            step_scopes: Arc::new(step_scopes),
            context: expr::map_scope_value(&run.context),
            shared_context: Arc::new(run.context.clone()),
        }
    }
}

impl RunState {
    /// The scope templates of this run render against now.
    pub(super) fn scope(&self) -> Scope {
        let cache = &self.scope;
        Scope {
            context: cache.context.clone(),
            steps: expr::steps_scope(&cache.step_scopes),
            run: minijinja::context! {
                id => self.run.id.clone(),
                workflow_id => self.run.workflow_id.clone(),
                parent_id => self.run.parent_run_id.clone(),
            },
            secrets: Arc::new(Secrets::new(cache.secrets.clone())),
            item: MjValue::UNDEFINED,
            index: MjValue::UNDEFINED,
        }
    }

    /// Keeps what templates see of step `idx` (`steps.<name>`) in line with its record:
    /// finished steps are visible, others are not.
    pub(super) fn remember_step(&mut self, idx: usize) {
        let step = &self.run.steps[idx];
        let cache = &mut self.scope;
        if step.status.is_finished() {
            Arc::make_mut(&mut cache.step_scopes).insert(step.name.clone(), scope_of(step));
        } else if cache.step_scopes.contains_key(&step.name) {
            Arc::make_mut(&mut cache.step_scopes).remove(&step.name);
        }
    }

    /// Merges `values` into the context, unless that would make it larger than
    /// `limits.max_context_bytes`: then nothing changes and the size it would have had is
    /// the error.
    pub fn merge_context(&mut self, mut values: Map<String, Value>) -> Result<(), usize> {
        if values.is_empty() {
            return Ok(());
        }
        crate::model::scrub_nul_map(&mut values);
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
        self.scope.shared_context = Arc::new(self.run.context.clone());
        self.scope.context = expr::map_scope_value(&self.run.context);
        self.touch_context();
        Ok(())
    }
}

/// The scope entry of a finished step.
fn scope_of(step: &StepRun) -> MjValue {
    expr::step_scope(
        step.output.as_ref(),
        step.status.as_str(),
        step.http_code,
        step.error.as_deref(),
    )
}
