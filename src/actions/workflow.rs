//! `workflow`: runs another workflow as a child run and waits for it. Input
//! `{"workflow_id", "version"?, "context"?}`; the step is `WAITING` until the child ends, and
//! succeeds with `{"run_id", "status", "context"}` when the child succeeded (else it fails).
//! The child records `parent_run_id`; canceling the parent cancels it.

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::http::is_template;
use super::{Action, Call, Effect, Failure, Outcome, Parking, unknown_fields};
use crate::problems::Violation;

/// The `workflow` action.
pub struct Workflow;

#[async_trait]
impl Action for Workflow {
    fn check(&self, input: &Map<String, Value>) -> Vec<Violation> {
        let mut out = unknown_fields(input, &["workflow_id", "version", "context"]);
        match input.get("workflow_id") {
            Some(Value::String(id)) if !id.is_empty() => {}
            _ => out.push(Violation::new("", "\"workflow_id\" is required")),
        }
        match input.get("version") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if is_template(t) => {}
            Some(v) if v.as_u64().is_some_and(|n| n >= 1) => {}
            Some(_) => out.push(Violation::new(
                "/version",
                "must be a version number (1 or more)",
            )),
        }
        match input.get("context") {
            None | Some(Value::Object(_)) => {}
            Some(Value::String(t)) if is_template(t) => {}
            Some(_) => out.push(Violation::new("/context", "must be an object")),
        }
        out
    }

    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let workflow_id = call
            .input
            .get("workflow_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Failure::rejected("input.workflow_id must render to a workflow id"))?
            .to_owned();
        let version = match call.input.get("version") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        Failure::rejected("input.version must render to a version number")
                    })?,
            ),
        };
        let context = match call.input.get("context") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err(Failure::rejected("input.context must render to an object")),
        };
        Ok(Outcome {
            effect: Effect::Park(Parking::Child {
                workflow_id,
                version,
                context,
            }),
            ..Outcome::output(Value::Null)
        })
    }
}
