//! `condition`: a local guard. Either the Go form `{key, equals | not_equals}` testing a
//! context key, or `{if: expression}`. When false, `on_false` decides: `stop` (the default)
//! ends the run as `SUCCEEDED`, `fail` fails the step, `continue` goes on. The output is
//! `{"result": bool}` either way.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{Action, Call, Effect, Failure, Outcome};

/// The `condition` action.
pub struct Condition;

/// A context value by key; a dotted key reads nested objects when no key matches whole.
fn lookup<'a>(context: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    context.get(key).or_else(|| {
        let mut parts = key.split('.');
        let first = context.get(parts.next()?)?;
        parts.try_fold(first, |v, part| match v {
            Value::Object(m) => m.get(part),
            Value::Array(a) => a.get(part.parse::<usize>().ok()?),
            _ => None,
        })
    })
}

#[async_trait]
impl Action for Condition {
    fn expression_fields(&self) -> &'static [&'static str] {
        &["if"]
    }

    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let input = call
            .input
            .as_object()
            .ok_or_else(|| Failure::rejected("input must be an object"))?;
        let (result, description) = match (input.get("if"), input.get("key")) {
            (Some(Value::Bool(b)), _) => (*b, "the `if` expression".to_owned()),
            (Some(_), _) => return Err(Failure::rejected("input.if must be an expression")),
            (None, Some(Value::String(key))) => {
                let actual = lookup(&call.context, key);
                match (input.get("equals"), input.get("not_equals")) {
                    (Some(expected), _) => (
                        actual == Some(expected),
                        format!("context.{key} == {expected}"),
                    ),
                    (None, Some(unexpected)) => (
                        actual != Some(unexpected),
                        format!("context.{key} != {unexpected}"),
                    ),
                    (None, None) => {
                        return Err(Failure::rejected("input needs equals or not_equals"));
                    }
                }
            }
            _ => {
                return Err(Failure::rejected(
                    "input needs `if`, or `key` with equals/not_equals",
                ));
            }
        };
        let output = json!({ "result": result });
        if result {
            return Ok(Outcome::output(output));
        }
        match input
            .get("on_false")
            .and_then(Value::as_str)
            .unwrap_or("stop")
        {
            "stop" => Ok(Outcome {
                effect: Effect::StopRun,
                ..Outcome::output(output)
            }),
            "continue" => Ok(Outcome::output(output)),
            "fail" => Err(Failure {
                output: Some(output),
                ..Failure::rejected(format!("condition is false: {description}"))
            }),
            other => Err(Failure::rejected(format!("unknown on_false {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn call(input: Value, context: Value) -> Call {
        Call {
            input,
            run_id: "run_1".into(),
            step: "check".into(),
            idempotency_key: "run_1/check".into(),
            context: Arc::new(context.as_object().unwrap().clone()),
        }
    }

    #[tokio::test]
    async fn go_form_compares_a_context_key() {
        let ok = Condition
            .execute(call(
                json!({"key": "tier", "equals": "gold"}),
                json!({"tier": "gold"}),
            ))
            .await
            .unwrap();
        assert_eq!(ok.effect, Effect::None);
        let stop = Condition
            .execute(call(
                json!({"key": "tier", "equals": "gold"}),
                json!({"tier": "tin"}),
            ))
            .await
            .unwrap();
        assert_eq!(stop.effect, Effect::StopRun);
        let go = Condition
            .execute(call(
                json!({"key": "a.b", "not_equals": 1, "on_false": "continue"}),
                json!({"a": {"b": 1}}),
            ))
            .await
            .unwrap();
        assert_eq!(
            (go.effect, go.output),
            (Effect::None, json!({"result": false}))
        );
    }

    #[tokio::test]
    async fn on_false_fail_fails_the_step_without_retry() {
        let err = Condition
            .execute(call(json!({"if": false, "on_false": "fail"}), json!({})))
            .await
            .unwrap_err();
        assert_eq!(err.kind, super::super::FailureKind::Rejected);
        assert!(err.message.contains("condition is false"));
    }
}
