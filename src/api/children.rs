//! Submission checks of `workflow` steps that name their child by a literal id: the
//! workflow (and version) must exist, and the chain of literal calls from here must fit
//! the nesting limit. Calls whose id is a template, and cycles (a workflow that may call
//! itself under a `when`), are left to the run-time depth check.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::ApiError;
use crate::actions::is_template;
use crate::definition::Workflow;
use crate::engine::MAX_DEPTH;
use crate::store::{DynStore, StoreError};

/// Checks the `workflow` steps of `wf`, stored (or to be stored) as `own_id`.
pub(super) async fn check(
    store: &DynStore,
    wf: &Workflow,
    own_id: Option<&str>,
) -> Result<(), ApiError> {
    for (i, step) in wf.steps.iter().enumerate() {
        if step.action_name != "workflow" {
            continue;
        }
        let Some(id) = step
            .input
            .literal_field("workflow_id")
            .and_then(Value::as_str)
        else {
            continue;
        };
        if is_template(id) || Some(id) == own_id {
            continue;
        }
        let version = step
            .input
            .literal_field("version")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok());
        let pointer = format!("/steps/{i}/input/workflow_id");
        let child = match store.get_workflow(id, version).await {
            Ok(child) => child,
            Err(StoreError::NotFound(_)) => {
                let what = match version {
                    Some(v) => format!("workflow {id:?} has no version {v}"),
                    None => format!("no workflow {id:?} exists"),
                };
                return Err(ApiError::bad_request(&pointer, what));
            }
            Err(e) => return Err(e.into()),
        };
        let mut walk = Walk {
            path: own_id.into_iter().map(str::to_owned).collect(),
            depths: HashMap::new(),
            reads: 0,
        };
        walk.path.insert(id.to_owned());
        let depth = 1 + walk.depth_below(store, &child.definition, 2).await?;
        if depth > MAX_DEPTH {
            return Err(ApiError::bad_request(
                &pointer,
                format!(
                    "calling {id:?} nests runs {depth} deep through the workflows it calls, \
                     over the limit of {MAX_DEPTH}"
                ),
            ));
        }
    }
    Ok(())
}

/// Stored workflows read at most by one submission check; deeper chains are left to the
/// run-time limit.
const MAX_READS: usize = 200;

/// A walk down the literal calls of stored workflows: the workflows on the current path
/// (a cycle adds no depth here), the depth found below each workflow already walked, and
/// the reads made so far.
struct Walk {
    path: HashSet<String>,
    depths: HashMap<String, u32>,
    reads: usize,
}

impl Walk {
    /// How many levels of child runs the literal `workflow` steps of `definition` add,
    /// looked up to one level past the limit.
    async fn depth_below(
        &mut self,
        store: &DynStore,
        definition: &Value,
        level: u32,
    ) -> Result<u32, ApiError> {
        if level > MAX_DEPTH + 1 {
            return Ok(0);
        }
        let mut deepest = 0;
        for (id, version) in literal_calls(definition) {
            if self.path.contains(&id) {
                continue;
            }
            if let Some(&known) = self.depths.get(&id) {
                deepest = deepest.max(1 + known);
                continue;
            }
            if self.reads >= MAX_READS {
                break;
            }
            self.reads += 1;
            let Ok(child) = store.get_workflow(&id, version).await else {
                continue;
            };
            self.path.insert(id.clone());
            let below = Box::pin(self.depth_below(store, &child.definition, level + 1)).await?;
            self.path.remove(&id);
            self.depths.insert(id, below);
            deepest = deepest.max(1 + below);
        }
        Ok(deepest)
    }
}

/// The children a stored definition calls by a literal id.
fn literal_calls(definition: &Value) -> Vec<(String, Option<u32>)> {
    let steps = definition.get("steps").and_then(Value::as_array);
    steps
        .into_iter()
        .flatten()
        .filter(|s| s.get("action").and_then(Value::as_str) == Some("workflow"))
        .filter_map(|s| {
            let input = s.get("input")?;
            let id = input.get("workflow_id")?.as_str()?;
            let version = input
                .get("version")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok());
            (!is_template(id)).then(|| (id.to_owned(), version))
        })
        .collect()
}
