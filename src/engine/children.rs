//! Runs started by `workflow` steps: starting a child (idempotently, within the nesting
//! limit), canceling the children a parent abandoned, telling a parent its child ended,
//! and the parent's periodic check of its children (for a notice lost in a crash).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::decide::Intervention;
use super::shared::Shared;
use super::state::RunState;
use super::{EngineError, MAX_DEPTH, StartRun};
use crate::model::{Attempt, Run};

impl Shared {
    /// Starts the child run step `index` of `parent` asks for, in its attempt `attempt`;
    /// a step resumed after a crash finds the child it started before (same idempotency
    /// key). The error says why the child cannot start.
    pub(super) async fn start_child(
        self: &Arc<Self>,
        parent: &Run,
        index: usize,
        attempt: &Attempt,
        workflow_id: &str,
        version: Option<u32>,
        context: Map<String, Value>,
    ) -> Result<String, String> {
        let depth = parent.control.extra.depth + 1;
        if depth > MAX_DEPTH {
            return Err(format!(
                "runs nest at most {MAX_DEPTH} deep and this child would be at depth {depth} \
                 (do workflows call each other in a cycle?)"
            ));
        }
        let step = &parent.steps[index].name;
        let key = format!("child:{}:{step}:{}", parent.id, attempt.attempt);
        let request = StartRun {
            workflow_id: workflow_id.to_owned(),
            version,
            context,
            idempotency: Some((key, "child".into())),
            parent: Some((parent.id.clone(), depth)),
        };
        self.start_run(request)
            .await
            .map(|(child, _)| child.id)
            .map_err(|e| crate::problems::chain(&e))
    }

    /// What follows a committed change of a run, outside it: child runs it abandoned are
    /// canceled, and a parent waiting for it hears that it ended. Both go through
    /// [`Self::decide`] on their own task; a failure is logged, and the parent's periodic
    /// check of its children makes up for a notice lost in a crash.
    pub(super) fn after_commit(self: &Arc<Self>, state: &mut RunState) {
        let abandoned = state.take_abandoned();
        let run = &state.run;
        for child in abandoned {
            let shared = self.clone();
            let by = format!("parent run {}", run.id);
            self.runtime.spawn(async move {
                match shared.decide(&child, Intervention::Cancel { by }).await {
                    Ok(_) | Err(EngineError::Conflict(_)) => {}
                    Err(e) => {
                        tracing::warn!(run_id = %child, error = %e, "canceling a child run failed")
                    }
                }
            });
        }
        if let (Some(parent), true) = (&run.parent_run_id, run.status.is_terminal()) {
            let shared = self.clone();
            let parent = parent.clone();
            let ended = Intervention::ChildEnded {
                run_id: run.id.clone(),
                status: run.status,
                context: run.context.clone(),
                error: run.error.clone(),
            };
            self.runtime.spawn(async move {
                match shared.decide(&parent, ended).await {
                    Ok(_) | Err(EngineError::Conflict(_)) | Err(EngineError::NotFound(_)) => {}
                    Err(e) => tracing::warn!(run_id = %parent, error = %e, "telling a parent run its child ended failed"),
                }
            });
        }
    }

    /// Reads the child runs `state` waits for and applies the end of those that ended;
    /// true when one had.
    pub(super) async fn check_children(&self, state: &mut RunState) -> bool {
        let mut ended = false;
        for child in state.children() {
            let Ok(run) = self.store.get_run(&child).await else {
                continue;
            };
            if run.status.is_terminal() {
                let end = Intervention::ChildEnded {
                    run_id: run.id,
                    status: run.status,
                    context: run.context,
                    error: run.error,
                };
                ended |= state.decide(end).is_ok();
            }
        }
        ended
    }
}
