//! `http`: a generic HTTP call. Input: `method` (default POST), `url`, `headers`, `query`,
//! `body`. Output: `{status, headers, body}`, with `body` parsed when it is JSON.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use url::Url;

use super::client::{Body, HttpClient, Request};
use super::{Action, Call, Failure, Outcome};
use crate::definition::Violation;

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

/// Parses an absolute `http`/`https` URL.
pub fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not an absolute URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(format!("{text:?} has no host")),
        other => Err(format!(
            "{text:?}: only http and https URLs are allowed, not {other}"
        )),
    }
}

/// True when `s` holds a `{{ }}` or `{% %}` template, checked only once rendered.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Parses an HTTP method name, case-insensitively.
pub fn parse_method(text: &str) -> Result<reqwest::Method, String> {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    let upper = text.to_ascii_uppercase();
    if !KNOWN.contains(&upper.as_str()) {
        return Err(format!(
            "unknown HTTP method {text:?}; use one of {}",
            KNOWN.join(", ")
        ));
    }
    reqwest::Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
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
            out.push(Violation::new("/url", e));
        }
        if let Some(Value::String(method)) = input.get("method")
            && !is_template(method)
            && let Err(e) = parse_method(method)
        {
            out.push(Violation::new("/method", e));
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
            Some(Value::String(u)) => parse_http_url(u).map_err(Failure::rejected)?,
            _ => return Err(Failure::rejected("input.url must be a string")),
        };
        let method = match input.get("method") {
            None | Some(Value::Null) => reqwest::Method::POST,
            Some(Value::String(m)) => parse_method(m).map_err(Failure::rejected)?,
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
        self.client.send(request).await
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
                .contains("only http and https")
        );
        assert!(parse_http_url("/relative").is_err());
        assert!(parse_http_url("file:///etc/passwd").is_err());
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
