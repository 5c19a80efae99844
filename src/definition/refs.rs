//! What a template may read: `context`, `run.id` / `run.workflow_id`, `secrets`, and the
//! results of steps upstream of its own (never its own or a later one's).

use std::collections::{BTreeSet, HashMap};

use super::dag::Dag;
use crate::expr::{ROOTS, STEP_FIELDS};
use crate::problems::Violation;

/// Globals of the expression language that are not variables.
const FUNCTIONS: [&str; 4] = ["range", "dict", "debug", "namespace"];

/// Named in messages: where secrets may be used.
const SENDING_ACTIONS: &str = "http, ai_router.chat, web.search, web.extract, memarch.*, scm.call";

/// What a template in one step may read.
pub(super) struct RefScope<'a> {
    pub step: usize,
    pub names: &'a HashMap<&'a str, usize>,
    pub dag: Option<&'a Dag>,
    /// The secrets declared in the server's config.
    pub secrets: &'a BTreeSet<String>,
    /// Secrets may be read here: the input of an action whose input leaves the server.
    pub secrets_allowed: bool,
    /// `item` and `index` may be read here: the input of a `foreach` step.
    pub in_foreach: bool,
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
        if root == "secrets" {
            return self.check_secret(reference, parts.next());
        }
        if matches!(root, "item" | "index") && !self.in_foreach {
            return Some(format!(
                "{root} is only defined in the input of a step with foreach"
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
            ("run", Some(field), _) if !["id", "workflow_id", "parent_id"].contains(&field) => {
                Some(format!(
                    "{reference:?}: run has id, workflow_id and parent_id"
                ))
            }
            _ => None,
        }
    }

    /// Why `secrets.<name>` may not be read here, if so.
    fn check_secret(&self, reference: &str, name: Option<&str>) -> Option<String> {
        if !self.secrets_allowed {
            return Some(format!(
                "{reference:?}: secrets may only be used in the input of an action that \
                 sends it out ({})",
                SENDING_ACTIONS
            ));
        }
        match name {
            None => Some("read one secret by name: secrets.NAME".into()),
            Some(name) if !self.secrets.contains(name) => Some(format!(
                "secrets.{name} is not declared under secrets: in the server's config"
            )),
            Some(_) => None,
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
