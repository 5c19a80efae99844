//! What a template may read: `context`, `run.id` / `run.workflow_id`, `secrets`, and the
//! results of steps upstream of its own (never its own or a later one's).

use std::collections::HashMap;

use super::dag::Dag;
use crate::expr::{ROOTS, STEP_FIELDS};
use crate::problems::Violation;

/// Globals of the expression language that are not variables.
const FUNCTIONS: [&str; 4] = ["range", "dict", "debug", "namespace"];

/// What a template in one step may read.
pub(super) struct RefScope<'a> {
    pub step: usize,
    pub names: &'a HashMap<&'a str, usize>,
    pub dag: Option<&'a Dag>,
}

impl RefScope<'_> {
    /// Why `reference` (a dotted name such as `steps.fetch.output`) may not be read, if so.
    pub fn check(&self, reference: &str) -> Option<String> {
        let mut parts = reference.split('.');
        let root = parts.next().unwrap_or_default();
        if FUNCTIONS.contains(&root) {
            return None;
        }
        if !ROOTS.contains(&root) {
            return Some(format!(
                "unknown variable {root:?}; templates may read {}",
                ROOTS.join(", ")
            ));
        }
        match (root, parts.next(), parts.next()) {
            ("steps", Some(name), field) => {
                let Some(&target) = self.names.get(name) else {
                    return Some(format!("{reference:?} refers to unknown step {name:?}"));
                };
                if target == self.step {
                    return Some(format!("{reference:?}: a step cannot read its own result"));
                }
                if self.dag.is_some_and(|d| !d.is_upstream(target, self.step)) {
                    return Some(format!(
                        "{reference:?}: step {name:?} is not upstream of this step (add it to depends_on)"
                    ));
                }
                match field {
                    Some(f) if !STEP_FIELDS.contains(&f) => Some(format!(
                        "{reference:?}: steps have {}, not {f:?}",
                        STEP_FIELDS.join(", ")
                    )),
                    _ => None,
                }
            }
            ("run", Some(field), _) if !["id", "workflow_id"].contains(&field) => {
                Some(format!("{reference:?}: run has id and workflow_id"))
            }
            _ => None,
        }
    }

    pub fn check_all(&self, pointer: &str, refs: Vec<(String, String)>, v: &mut Vec<Violation>) {
        for (at, reference) in refs {
            if let Some(message) = self.check(&reference) {
                v.push(Violation::new(format!("{pointer}{at}"), message));
            }
        }
    }
}
