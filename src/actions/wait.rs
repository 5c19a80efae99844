//! `wait`: a durable timer. Input `{"duration_ms"}` or `{"until": RFC 3339}`; the step is
//! `WAITING` (the run parks when nothing else can go on, holding no task) and succeeds
//! when the time comes, also after a restart. Output: `{"until"}`.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::http::is_template;
use super::{Action, Call, Effect, Failure, Outcome, Parking, unknown_fields};
use crate::model::now;
use crate::problems::Violation;

/// The `wait` action.
pub struct Wait;

/// The longest wait: a year.
const MAX_WAIT_MS: u64 = 365 * 24 * 3600 * 1000;

#[async_trait]
impl Action for Wait {
    fn check(&self, input: &Map<String, Value>) -> Vec<Violation> {
        let mut out = unknown_fields(input, &["duration_ms", "until"]);
        match (input.get("duration_ms"), input.get("until")) {
            (Some(_), Some(_)) => {
                out.push(Violation::new("", "give duration_ms or until, not both"))
            }
            (None, None) => out.push(Violation::new("", "give duration_ms or until")),
            (Some(Value::String(t)), None) if is_template(t) => {}
            (Some(d), None) => {
                if d.as_u64().is_none_or(|ms| ms > MAX_WAIT_MS) {
                    out.push(Violation::new(
                        "/duration_ms",
                        format!("must be a number of milliseconds from 0 to {MAX_WAIT_MS}"),
                    ));
                }
            }
            (None, Some(Value::String(t))) if is_template(t) => {}
            (None, Some(Value::String(t))) => {
                if let Err(e) = chrono::DateTime::parse_from_rfc3339(t) {
                    out.push(Violation::new(
                        "/until",
                        format!("{t:?} is not an RFC 3339 time: {e}"),
                    ));
                }
            }
            (None, Some(_)) => out.push(Violation::new("/until", "must be an RFC 3339 time")),
        }
        out
    }

    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let until = match (call.input.get("duration_ms"), call.input.get("until")) {
            (Some(d), _) => {
                let ms = d.as_u64().filter(|ms| *ms <= MAX_WAIT_MS).ok_or_else(|| {
                    Failure::rejected(format!(
                        "duration_ms {d} is not a number of milliseconds from 0 to {MAX_WAIT_MS}"
                    ))
                })?;
                now() + chrono::Duration::milliseconds(ms as i64)
            }
            (None, Some(Value::String(t))) => chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    Failure::rejected(format!("until {t:?} is not an RFC 3339 time: {e}"))
                })?
                .with_timezone(&chrono::Utc),
            _ => return Err(Failure::rejected("give duration_ms or until")),
        };
        Ok(Outcome {
            effect: Effect::Park(Parking::Timer { until }),
            ..Outcome::output(
                json!({"until": until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
            )
        })
    }
}
