//! `event`: waits for `POST /v1/runs/{id}/events/{name}`. Input `{"name", "timeout_ms"?,
//! "schema"?}`; the step is `WAITING` until an event of that name arrives (one that came
//! earlier was kept and is taken at once), and its output is the event's `data`. Data that
//! fails `schema` is refused with `400` and the step keeps waiting; `timeout_ms` fails it.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::http::is_template;
use super::{Action, Call, Effect, Failure, Outcome, Parking, unknown_fields};
use crate::problems::Violation;

/// The `event` action.
pub struct Event;

#[async_trait]
impl Action for Event {
    fn check(&self, input: &Map<String, Value>) -> Vec<Violation> {
        let mut out = unknown_fields(input, &["name", "timeout_ms", "schema"]);
        match input.get("name") {
            Some(Value::String(name)) if is_template(name) => out.push(Violation::new(
                "/name",
                "the event name must be written out (events are matched to steps by name)",
            )),
            Some(Value::String(name)) if valid_name(name) => {}
            Some(_) => out.push(Violation::new(
                "/name",
                "must be 1 to 128 letters, digits and -_.:",
            )),
            None => out.push(Violation::new("", "\"name\" is required")),
        }
        if let Some(t) = input.get("timeout_ms")
            && t.as_u64().is_none_or(|ms| ms == 0)
        {
            out.push(Violation::new(
                "/timeout_ms",
                "must be a positive number of milliseconds",
            ));
        }
        if let Some(schema) = input.get("schema")
            && let Err(e) = jsonschema::validator_for(schema)
        {
            out.push(Violation::new(
                "/schema",
                format!("not a valid JSON Schema: {e}"),
            ));
        }
        out
    }

    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let name = call
            .input
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::rejected("input.name must be a string"))?
            .to_owned();
        let timeout = call
            .input
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis);
        Ok(Outcome {
            effect: Effect::Park(Parking::Event { name, timeout }),
            ..Outcome::output(Value::Null)
        })
    }
}

/// Event names travel in URL paths: a short, plain set of characters.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}
