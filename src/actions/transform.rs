//! `transform`: a local step. `set` merges keys into the run context; `value` becomes the
//! step's output (without `value`, the output is what `set` merged).

use async_trait::async_trait;
use serde_json::Value;

use super::{Action, Call, Effect, Failure, Outcome};

/// The `transform` action.
pub struct Transform;

#[async_trait]
impl Action for Transform {
    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let input = call
            .input
            .as_object()
            .ok_or_else(|| Failure::rejected("input must be an object"))?;
        let set = match input.get("set") {
            None => None,
            Some(Value::Object(map)) => Some(map.clone()),
            Some(_) => return Err(Failure::rejected("input.set must render to an object")),
        };
        let output = match (input.get("value"), &set) {
            (Some(v), _) => v.clone(),
            (None, Some(set)) => Value::Object(set.clone()),
            (None, None) => Value::Null,
        };
        Ok(Outcome {
            effect: set.map(Effect::MergeContext).unwrap_or(Effect::None),
            ..Outcome::output(output)
        })
    }
}
