//! A step's `retry` and `approval` blocks: read from the definition, checked against the
//! server's limits, and turned into the policies the engine applies.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{ApprovalPolicy, RetryClass, RetryPolicy, Validator};
use crate::model::Decision;
use crate::problems::Violation;

#[derive(Deserialize, Default)]
pub(super) struct RetrySpec {
    max: Option<u32>,
    backoff_ms: Option<u64>,
    multiplier: Option<f64>,
    max_backoff_ms: Option<u64>,
    jitter: Option<bool>,
    retry_on: Option<Vec<String>>,
    deadline_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
pub(super) struct ApprovalSpec {
    timeout_ms: Option<u64>,
    on_timeout: Option<String>,
    input_schema: Option<Value>,
}

pub(super) fn retry_policy(
    validator: &Validator,
    at: &str,
    spec: Option<&RetrySpec>,
    v: &mut Vec<Violation>,
) -> Option<RetryPolicy> {
    let Some(spec) = spec else {
        return Some(RetryPolicy::default());
    };
    let d = RetryPolicy::default();
    let policy = RetryPolicy {
        max: spec.max.unwrap_or(0),
        backoff_ms: spec.backoff_ms.unwrap_or(d.backoff_ms),
        multiplier: spec.multiplier.unwrap_or(d.multiplier),
        max_backoff_ms: spec.max_backoff_ms.unwrap_or(d.max_backoff_ms),
        jitter: spec.jitter.unwrap_or(false),
        retry_on: spec.retry_on.as_ref().map(|classes| {
            classes
                .iter()
                .filter_map(|c| RetryClass::parse(c))
                .collect()
        }),
        deadline_ms: spec.deadline_ms,
    };
    let before = v.len();
    if policy.max > validator.limits.max_retries {
        v.push(Violation::new(
            format!("{at}/retry/max"),
            format!(
                "{} retries exceed the limit of {}",
                policy.max, validator.limits.max_retries
            ),
        ));
    }
    if policy.backoff_ms > policy.max_backoff_ms {
        v.push(Violation::new(
            format!("{at}/retry/backoff_ms"),
            format!(
                "backoff_ms {} exceeds max_backoff_ms {}",
                policy.backoff_ms, policy.max_backoff_ms
            ),
        ));
    }
    if !(1.0..=100.0).contains(&policy.multiplier) {
        v.push(Violation::new(
            format!("{at}/retry/multiplier"),
            "multiplier must be between 1 and 100",
        ));
    }
    if let (Some(classes), Some(given)) = (&policy.retry_on, &spec.retry_on)
        && classes.len() != given.len()
    {
        v.push(Violation::new(
            format!("{at}/retry/retry_on"),
            "unknown retry class",
        ));
    }
    (v.len() == before).then_some(policy)
}

pub(super) fn approval_policy(
    validator: &Validator,
    at: &str,
    requires_approval: bool,
    spec: Option<&ApprovalSpec>,
    v: &mut Vec<Violation>,
) -> Option<Option<ApprovalPolicy>> {
    if !(requires_approval || spec.is_some() || validator.approve_every_step) {
        return Some(None);
    }
    let input_schema = match spec.and_then(|a| a.input_schema.as_ref()) {
        None => None,
        Some(schema) => match jsonschema::options().build(schema) {
            Ok(compiled) => Some(Arc::new(compiled)),
            Err(e) => {
                v.push(Violation::new(
                    format!("{at}/approval/input_schema"),
                    format!("not a valid JSON Schema: {e}"),
                ));
                return None;
            }
        },
    };
    Some(Some(ApprovalPolicy {
        timeout: spec.and_then(|a| a.timeout_ms).map(Duration::from_millis),
        on_timeout: match spec.and_then(|a| a.on_timeout.as_deref()) {
            Some("approve") => Decision::Approved,
            _ => Decision::Rejected,
        },
        input_schema,
    }))
}
