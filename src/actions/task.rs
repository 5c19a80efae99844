//! `task`: hands the step to a worker process (DESIGN §8). Input `{"queue", "payload"?}`;
//! the step is `WAITING` while its task waits on the queue and a worker holds it, and
//! its output is what the worker completes it with. The engine writes the task in the
//! commit that parks the step; the worker API (`/v1/tasks/*`) does the rest.
//!
//! The payload is stored with the task and handed to whichever worker claims it, so it
//! may not hold secrets (workers have their own).

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::http::is_template;
use super::{Action, Call, Effect, Failure, Outcome, Parking, unknown_fields};
use crate::problems::Violation;

/// The `task` action.
pub struct Task;

#[async_trait]
impl Action for Task {
    fn check(&self, input: &Map<String, Value>) -> Vec<Violation> {
        let mut out = unknown_fields(input, &["queue", "payload"]);
        match input.get("queue") {
            Some(Value::String(q)) if is_template(q) || valid_queue_name(q) => {}
            Some(_) => out.push(Violation::new(
                "/queue",
                format!("a queue name has 1 to {MAX_QUEUE_NAME} letters, digits and -_.:/"),
            )),
            None => out.push(Violation::new("", "\"queue\" is required")),
        }
        out
    }

    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let mut input = match call.input {
            Value::Object(map) => map,
            _ => return Err(Failure::rejected("the input must be an object")),
        };
        let queue = match input.remove("queue") {
            Some(Value::String(q)) if valid_queue_name(&q) => q,
            other => {
                return Err(Failure::rejected(format!(
                    "input.queue must render to a queue name (1 to {MAX_QUEUE_NAME} letters, \
                     digits and -_.:/), not {}",
                    other.unwrap_or(Value::Null)
                )));
            }
        };
        let payload = input.remove("payload").unwrap_or(Value::Null);
        Ok(Outcome {
            effect: Effect::Park(Parking::Task { queue, payload }),
            ..Outcome::output(Value::Null)
        })
    }
}

/// The longest queue name.
pub const MAX_QUEUE_NAME: usize = 128;

/// Queue names travel in JSON bodies and metric labels: a short, plain set of characters.
pub fn valid_queue_name(name: &str) -> bool {
    (1..=MAX_QUEUE_NAME).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_short_and_plain() {
        for ok in ["build", "gpu.large", "team-a/deploy:eu_1"] {
            assert!(valid_queue_name(ok), "{ok}");
        }
        for bad in ["", "with space", "naïve", "a{b}", &"x".repeat(129)] {
            assert!(!valid_queue_name(bad), "{bad}");
        }
    }
}
