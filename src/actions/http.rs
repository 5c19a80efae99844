//! `http`: a generic HTTP call. Input: `method` (default POST), `url`, `headers`, `query`,
//! `body`. Output: `{status, headers, body}`, with `body` parsed when it is JSON.

use std::time::Duration;

use super::{Action, Call, Failure, Outcome};
use crate::outbound::{Body, HttpClient, Request, parse_http_url};
use crate::problems::Violation;
use async_trait::async_trait;
use serde_json::{Map, Value};

/// The `http` action.
pub struct Http {
    client: HttpClient,
    timeout: Duration,
}

impl Http {
    pub fn new(client: HttpClient, timeout: Duration) -> Self {
        Self { client, timeout }
    }
}

/// True when `s` holds a `{{ }}` or `{% %}` template, checked only once rendered.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// The HTTP methods a step may use.
const METHODS: [reqwest::Method; 7] = [
    reqwest::Method::GET,
    reqwest::Method::POST,
    reqwest::Method::PUT,
    reqwest::Method::PATCH,
    reqwest::Method::DELETE,
    reqwest::Method::HEAD,
    reqwest::Method::OPTIONS,
];

/// A method name no step may use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown HTTP method {0:?}; use one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS")]
pub struct UnknownMethod(String);

/// Parses an HTTP method name, case-insensitively.
pub fn parse_method(text: &str) -> Result<reqwest::Method, UnknownMethod> {
    let upper = text.to_ascii_uppercase();
    METHODS
        .into_iter()
        .find(|m| m.as_str() == upper)
        .ok_or_else(|| UnknownMethod(text.to_owned()))
}

/// A map of strings, or a clear error naming `field`.
pub fn string_pairs(
    input: &Map<String, Value>,
    field: &str,
) -> Result<Vec<(String, String)>, Failure> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(_) | Value::Bool(_) => Ok((k.clone(), v.to_string())),
                _ => Err(Failure::rejected(format!("{field}.{k} must be a string"))),
            })
            .collect(),
        Some(_) => Err(Failure::rejected(format!("{field} must be an object"))),
    }
}

#[async_trait]
impl Action for Http {
    fn check(&self, input: &Map<String, Value>) -> Vec<Violation> {
        let mut out = Vec::new();
        if let Some(Value::String(url)) = input.get("url")
            && !is_template(url)
            && let Err(e) = parse_http_url(url)
        {
            out.push(Violation::new("/url", e.to_string()));
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
        Some(self.timeout)
    }

    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let input = call
            .input
            .as_object()
            .ok_or_else(|| Failure::rejected("input must be an object"))?;
        let url = match input.get("url") {
            Some(Value::String(u)) => {
                parse_http_url(u).map_err(|e| Failure::rejected(e.to_string()))?
            }
            _ => return Err(Failure::rejected("input.url must be a string")),
        };
        let method = match input.get("method") {
            None | Some(Value::Null) => reqwest::Method::POST,
            Some(Value::String(m)) => {
                parse_method(m).map_err(|e| Failure::rejected(e.to_string()))?
            }
            Some(_) => return Err(Failure::rejected("input.method must be a string")),
        };
        let headers = string_pairs(input, "headers")?;
        let body = match input.get("body") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if has_content_type(&headers) => {
                Some(Body::Text(text.clone()))
            }
            Some(v) => Some(Body::Json(v.clone())),
        };
        let request = Request {
            method,
            url,
            headers,
            query: string_pairs(input, "query")?,
            body,
            idempotency_key: call.idempotency_key,
        };
        Ok(self.client.send(request).await?.into())
    }
}

fn has_content_type(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("content-type") && !v.to_ascii_lowercase().contains("json")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_urls_pass() {
        assert!(parse_http_url("https://example.com/x").is_ok());
        assert!(
            parse_http_url("ftp://example.com")
                .unwrap_err()
                .to_string()
                .contains("only http and https")
        );
        assert!(parse_http_url("/relative").is_err());
        assert!(parse_http_url("file:///etc/passwd").is_err());
    }

    #[test]
    fn methods_are_known_names_in_any_case() {
        assert_eq!(parse_method("get").unwrap(), reqwest::Method::GET);
        assert!(parse_method("fetch").is_err());
    }

    #[test]
    fn templated_urls_are_checked_at_run_time_only() {
        let http = Http::new(HttpClient::new().unwrap(), Duration::from_secs(1));
        let input = serde_json::json!({"url": "{{ context.url }}", "method": "fetch"});
        let v = http.check(input.as_object().unwrap());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].pointer, "/method");
    }
}
