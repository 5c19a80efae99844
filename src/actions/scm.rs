//! `scm.call`: the source-control service. Input: `method` (default POST), `path` (relative
//! to `scm.base_url`), `query`, `body` (sent as JSON). An absolute `endpoint` replaces
//! `scm.base_url` + `path` as the URL called, so a step gives one or the other. Output:
//! `{status, headers, body}`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::http::{is_template, parse_method, string_pairs};
use super::service::{ENDPOINT, Service, ServiceRequest, input_object};
use super::{Action, Call, Failure, Outcome};
use crate::problems::Violation;

/// The `scm.call` action.
pub struct ScmCall {
    service: Service,
}

impl ScmCall {
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

/// Why `path` is not a path relative to the base URL, if so.
fn path_problem(path: &str) -> Option<String> {
    if path.trim().is_empty() {
        return Some("must not be empty".into());
    }
    if path.starts_with("//") || url::Url::parse(path).is_ok() {
        return Some(format!(
            "{path:?} must be a path relative to scm.base_url; give an absolute URL as \"endpoint\" instead"
        ));
    }
    None
}

fn has(input: &Map<String, Value>, field: &str) -> bool {
    !matches!(input.get(field), None | Some(Value::Null))
}

#[async_trait]
impl Action for ScmCall {
    fn check(&self, input: &Map<String, Value>) -> Vec<Violation> {
        let mut out = self.service.check(input, &[]);
        let path = input.get("path").filter(|p| !p.is_null());
        match (path, has(input, ENDPOINT)) {
            (Some(_), true) => out.push(Violation::new(
                "/path",
                "give either path (appended to scm.base_url) or an absolute endpoint, not both",
            )),
            (None, false) => out.push(Violation::new("", "\"path\" is required")),
            (None, true) => {}
            (Some(Value::String(path)), false) => {
                if let Some(problem) = path_problem(path).filter(|_| !is_template(path)) {
                    out.push(Violation::new("/path", problem));
                }
            }
            (Some(_), false) => out.push(Violation::new("/path", "must be a string")),
        }
        if let Some(Value::String(method)) = input.get("method")
            && !is_template(method)
            && let Err(e) = parse_method(method)
        {
            out.push(Violation::new("/method", e.to_string()));
        }
        out
    }

    fn default_timeout(&self) -> Option<Duration> {
        Some(self.service.timeout())
    }

    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let input = input_object(&call)?;
        let method = match input.get("method") {
            None | Some(Value::Null) => reqwest::Method::POST,
            Some(Value::String(m)) => {
                parse_method(m).map_err(|e| Failure::rejected(e.to_string()))?
            }
            Some(_) => return Err(Failure::rejected("input.method must be a string")),
        };
        let path = match input.get("path") {
            Some(Value::String(path)) => {
                if let Some(problem) = path_problem(path) {
                    return Err(Failure::rejected(format!("input.path: {problem}")));
                }
                path.clone()
            }
            None | Some(Value::Null) => String::new(),
            Some(_) => return Err(Failure::rejected("input.path must be a string")),
        };
        let request = ServiceRequest {
            method,
            path,
            query: string_pairs(input, "query")?,
            body: input.get("body").filter(|b| !b.is_null()).cloned(),
        };
        self.service.send(&call, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_relative() {
        assert_eq!(path_problem("/repos/a/pulls"), None);
        assert_eq!(path_problem("repos/a"), None);
        assert!(path_problem("https://evil.example/x").is_some());
        assert!(path_problem("//evil.example/x").is_some());
        assert!(path_problem("").is_some());
    }
}
