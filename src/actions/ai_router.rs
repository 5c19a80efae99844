//! `ai_router.chat`: an OpenAI-style chat completion through the AI router. Input: `model`,
//! a non-empty `messages` array of `{role, content}`, and any other fields (`temperature`,
//! `max_tokens`, …), all sent as the JSON body to `ai_router.base_url` +
//! `/v1/chat/completions` (or the absolute `endpoint`). Output: `{status, headers, body}`
//! plus `content` (the first choice's message content) and `usage`; the usage counters are
//! added to the run's totals.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::http::is_template;
use super::service::{Service, ServiceRequest, body_of, input_object};
use super::{Action, Call, Failure, Outcome};
use crate::problems::Violation;

/// The default path of chat completions.
pub const PATH: &str = "/v1/chat/completions";

/// The `ai_router.chat` action.
pub struct Chat {
    service: Service,
}

impl Chat {
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

/// Why `messages` is not a non-empty array of `{role, content}`, with the pointer below it.
fn message_problems(messages: &Value) -> Vec<Violation> {
    let items = match messages {
        Value::String(text) if is_template(text) => return Vec::new(),
        Value::Array(items) if items.is_empty() => {
            return vec![Violation::new(
                "/messages",
                "must hold at least one message",
            )];
        }
        Value::Array(items) => items,
        _ => return vec![Violation::new("/messages", "must be an array of messages")],
    };
    let mut out = Vec::new();
    for (i, message) in items.iter().enumerate() {
        let Some(message) = message.as_object() else {
            out.push(Violation::new(
                format!("/messages/{i}"),
                "must be an object {role, content}",
            ));
            continue;
        };
        for field in ["role", "content"] {
            if !message.contains_key(field) {
                out.push(Violation::new(
                    format!("/messages/{i}"),
                    format!("{field:?} is required"),
                ));
            }
        }
    }
    out
}

/// `content` of the first choice's message, when there is one.
fn first_content(body: &Value) -> Value {
    body.pointer("/choices/0/message/content")
        .cloned()
        .unwrap_or(Value::Null)
}

#[async_trait]
impl Action for Chat {
    fn check(&self, input: &Map<String, Value>) -> Vec<Violation> {
        let mut out = self.service.check(input, &["model", "messages"]);
        if let Some(messages) = input.get("messages") {
            out.extend(message_problems(messages));
        }
        out
    }

    fn default_timeout(&self) -> Option<Duration> {
        Some(self.service.timeout())
    }

    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let input = input_object(&call)?;
        let messages = input.get("messages").cloned().unwrap_or(Value::Null);
        if let Some(problem) = message_problems(&messages).first() {
            return Err(Failure::rejected(format!(
                "input{}: {}",
                problem.pointer, problem.message
            )));
        }
        let request = ServiceRequest {
            method: reqwest::Method::POST,
            path: PATH.to_owned(),
            query: Vec::new(),
            body: Some(body_of(input)),
        };
        let mut outcome = self.service.send(&call, request).await?;
        let usage = outcome.output["body"].get("usage").cloned();
        let content = first_content(&outcome.output["body"]);
        if let Value::Object(output) = &mut outcome.output {
            output.insert("content".into(), content);
            output.insert("usage".into(), usage.clone().unwrap_or(Value::Null));
        }
        outcome.usage = match usage {
            Some(Value::Object(usage)) => Some(usage),
            _ => None,
        };
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_must_be_a_non_empty_array_of_role_and_content() {
        assert!(message_problems(&json!([{"role": "user", "content": "hi"}])).is_empty());
        assert!(message_problems(&json!("{{ context.messages }}")).is_empty());
        assert_eq!(message_problems(&json!([]))[0].pointer, "/messages");
        assert_eq!(message_problems(&json!("hi"))[0].pointer, "/messages");
        let v = message_problems(&json!([{"role": "user"}]));
        assert_eq!(v[0].pointer, "/messages/0");
        assert!(v[0].message.contains("content"));
    }

    #[test]
    fn content_is_the_first_choices_message() {
        let body = json!({"choices": [{"message": {"role": "assistant", "content": "4"}}]});
        assert_eq!(first_content(&body), json!("4"));
        assert_eq!(first_content(&json!({"choices": []})), Value::Null);
    }
}
