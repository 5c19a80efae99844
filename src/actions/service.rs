//! What the service actions (`ai_router.chat`, `web.*`, `memarch.*`, `scm.call`) share: the
//! configured section they call (base URL, timeout, headers), the choice of target, the
//! submission checks, and the call itself, which goes through the one outbound path in
//! [`super::client`] so retries, timeouts, cancel and `Idempotency-Key` behave as for `http`.
//!
//! Target rule: an absolute `endpoint` in the input is the URL called; otherwise the
//! section's `base_url` plus the action's path. A step that has neither is rejected at
//! submission, naming the missing config key. The section's `headers` (credentials, as a
//! rule) are sent only to the `base_url`'s origin, never to an `endpoint` on another host.
//! Services speak JSON: a 2xx answer whose body is not JSON fails the step (never retried)
//! with a message saying so.

use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

use super::http::is_template;
use super::{Call, Failure, FailureKind, Outcome};
use crate::config::ServiceSection;
use crate::outbound::{Body, HttpClient, Request, join, parse_http_url};
use crate::problems::Violation;
use crate::secret::Secret;

/// The input key that overrides a service action's default target.
pub const ENDPOINT: &str = "endpoint";

/// A configured downstream service, shared by the actions that call it.
#[derive(Debug, Clone)]
pub struct Service {
    /// The config section, e.g. `ai_router`; named in messages.
    key: &'static str,
    base_url: Option<Url>,
    timeout: Duration,
    headers: Vec<(String, Secret)>,
    client: HttpClient,
}

/// One call to a service, before the target is resolved.
#[derive(Debug, Clone)]
pub struct ServiceRequest {
    pub method: reqwest::Method,
    /// Appended to `base_url` when the input has no `endpoint`.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl ServiceRequest {
    /// A POST of the input (without `endpoint`) as the JSON body to `path`.
    pub fn post_input(input: &Map<String, Value>, path: &str) -> Self {
        Self {
            method: reqwest::Method::POST,
            path: path.to_owned(),
            query: Vec::new(),
            body: Some(body_of(input)),
        }
    }
}

impl Service {
    /// The service of config section `key`.
    pub fn new(key: &'static str, section: &ServiceSection, client: HttpClient) -> Self {
        Self {
            key,
            base_url: section.base_url.clone(),
            timeout: section.timeout,
            headers: section.headers.clone(),
            client,
        }
    }

    /// The per-attempt timeout of steps that set none: the section's `timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Submission checks every service action shares: each of `required` is present, a
    /// literal `endpoint` is an absolute http(s) URL, and there is a target at all.
    pub fn check(&self, input: &Map<String, Value>, required: &[&str]) -> Vec<Violation> {
        let mut out: Vec<Violation> = required
            .iter()
            .filter(|field| matches!(input.get(**field), None | Some(Value::Null)))
            .map(|field| Violation::new("", format!("{field:?} is required")))
            .collect();
        match input.get(ENDPOINT) {
            None | Some(Value::Null) if self.base_url.is_none() => out.push(Violation::new(
                "",
                format!(
                    "{}.base_url is not configured; set it in the server's config.yaml or give the step an absolute \"endpoint\"",
                    self.key
                ),
            )),
            None | Some(Value::Null) => {}
            Some(Value::String(text)) if is_template(text) => {}
            Some(Value::String(text)) => {
                if let Err(e) = parse_http_url(text) {
                    out.push(Violation::new("/endpoint", format!("endpoint {e}")));
                }
            }
            Some(_) => out.push(Violation::new("/endpoint", "must be a string")),
        }
        out
    }

    /// The URL a call goes to: the input's absolute `endpoint`, else `base_url` + `path`.
    pub fn target(&self, input: &Map<String, Value>, path: &str) -> Result<Url, Failure> {
        match input.get(ENDPOINT) {
            Some(Value::String(text)) => parse_http_url(text)
                .map_err(|e| Failure::rejected(format!("{}: endpoint {e}", self.key))),
            None | Some(Value::Null) => match &self.base_url {
                Some(base) => join(base, path).map_err(|e| Failure::rejected(e.to_string())),
                None => Err(Failure::rejected(format!(
                    "{}.base_url is not configured and the step has no endpoint",
                    self.key
                ))),
            },
            Some(_) => Err(Failure::rejected("input.endpoint must be a string")),
        }
    }

    /// The section's headers for a call to `url`. They often carry credentials, so they go
    /// only to the configured service's origin, not to an `endpoint` elsewhere.
    fn headers_for(&self, url: &Url) -> Vec<(String, String)> {
        match &self.base_url {
            Some(base) if base.origin() == url.origin() => self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Sends `request` with the section's headers and the call's idempotency key; the
    /// output is `{status, headers, body}` with `body` parsed as JSON.
    pub async fn send(&self, call: &Call, request: ServiceRequest) -> Result<Outcome, Failure> {
        let input = input_object(call)?;
        let url = self.target(input, &request.path)?;
        let response = self
            .client
            .send(Request {
                method: request.method,
                headers: self.headers_for(&url),
                url: url.clone(),
                query: request.query,
                body: request.body.map(Body::Json),
                idempotency_key: call.idempotency_key.clone(),
            })
            .await?;
        require_json(self.key, &url, response.into())
    }
}

/// The rendered input as an object.
pub fn input_object(call: &Call) -> Result<&Map<String, Value>, Failure> {
    call.input
        .as_object()
        .ok_or_else(|| Failure::rejected("input must be an object"))
}

/// The input without `endpoint`: what most service actions send as their body.
pub fn body_of(input: &Map<String, Value>) -> Value {
    let mut body = input.clone();
    body.shift_remove(ENDPOINT);
    Value::Object(body)
}

/// Parses a body that arrived as text (the service sent no JSON content type); a body that
/// is not JSON fails the step.
fn require_json(key: &str, url: &Url, mut outcome: Outcome) -> Result<Outcome, Failure> {
    let Some(Value::String(text)) = outcome.output.get("body") else {
        return Ok(outcome);
    };
    match serde_json::from_str::<Value>(text) {
        Ok(parsed) => {
            outcome.output["body"] = parsed;
            Ok(outcome)
        }
        Err(e) => Err(Failure {
            kind: FailureKind::Rejected,
            message: format!(
                "{key}: {url} answered HTTP {} with a body that is not JSON: {e}",
                outcome.http_code.unwrap_or_default()
            ),
            http_code: outcome.http_code,
            retry_after: None,
            output: Some(outcome.output),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(base: Option<&str>) -> Service {
        let section = ServiceSection {
            base_url: base.map(|b| Url::parse(b).unwrap()),
            timeout: Duration::from_secs(3),
            headers: Default::default(),
        };
        Service::new("web", &section, HttpClient::new().unwrap())
    }

    fn input(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn paths_are_appended_to_the_base_url_keeping_its_prefix() {
        let base = Url::parse("http://h:1/api/").unwrap();
        assert_eq!(
            join(&base, "/v1/x").unwrap().as_str(),
            "http://h:1/api/v1/x"
        );
        let base = Url::parse("http://h:1").unwrap();
        assert_eq!(
            join(&base, "repos/a?b=1").unwrap().as_str(),
            "http://h:1/repos/a?b=1"
        );
    }

    #[test]
    fn an_endpoint_overrides_the_base_url() {
        let s = service(Some("http://h:1"));
        let url = s
            .target(&input(json!({"endpoint": "https://other/x"})), "/v1/search")
            .unwrap();
        assert_eq!(url.as_str(), "https://other/x");
        let url = s.target(&input(json!({})), "/v1/search").unwrap();
        assert_eq!(url.as_str(), "http://h:1/v1/search");
    }

    #[test]
    fn configured_headers_go_only_to_the_configured_origin() {
        let mut s = service(Some("http://h:1/api"));
        s.headers = vec![("Authorization".into(), Secret::new("Bearer t"))];
        let same = Url::parse("http://h:1/other/path").unwrap();
        assert_eq!(s.headers_for(&same).len(), 1);
        let elsewhere = Url::parse("http://h:2/api/v1/search").unwrap();
        assert!(s.headers_for(&elsewhere).is_empty());
    }

    #[test]
    fn an_unconfigured_service_needs_an_endpoint() {
        let s = service(None);
        let v = s.check(&input(json!({"query": "q"})), &["query"]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].pointer, "");
        assert!(v[0].message.contains("web.base_url is not configured"));
        assert!(
            s.check(&input(json!({"query": "q", "endpoint": "http://x/s"})), &[])
                .is_empty()
        );
        assert!(
            s.check(&input(json!({"endpoint": "{{ context.e }}"})), &[])
                .is_empty()
        );
    }

    #[test]
    fn a_relative_endpoint_and_missing_fields_are_named() {
        let s = service(Some("http://h:1"));
        let v = s.check(&input(json!({"endpoint": "/v1/x"})), &["query"]);
        let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["", "/endpoint"], "{v:?}");
    }

    #[test]
    fn a_text_body_that_is_json_is_parsed_and_one_that_is_not_fails() {
        let url = Url::parse("http://h/x").unwrap();
        let ok = Outcome {
            output: json!({"status": 200, "headers": {}, "body": "{\"a\": 1}"}),
            http_code: Some(200),
            effect: super::super::Effect::None,
            usage: None,
        };
        assert_eq!(
            require_json("web", &url, ok.clone()).unwrap().output["body"],
            json!({"a": 1})
        );
        let mut bad = ok;
        bad.output["body"] = json!("<html>");
        let failure = require_json("web", &url, bad).unwrap_err();
        assert_eq!(failure.kind, FailureKind::Rejected);
        assert!(failure.message.contains("not JSON"), "{}", failure.message);
    }
}
