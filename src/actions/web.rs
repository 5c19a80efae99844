//! `web.search` and `web.extract`: the web service. `web.search` sends `query` and any
//! options to `web.base_url` + `/v1/search`; `web.extract` sends `url` (the page to read)
//! and any options to `web.base_url` + `/v1/extract`. Either may name an absolute
//! `endpoint` instead. Output: `{status, headers, body}`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::http::is_template;
use super::service::{Service, ServiceRequest, input_object};
use super::{Action, Call, Failure, Outcome};
use crate::outbound::parse_http_url;
use crate::problems::Violation;

/// The `web.search` action.
pub struct Search {
    service: Service,
}

/// The `web.extract` action.
pub struct Extract {
    service: Service,
}

impl Search {
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

impl Extract {
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

#[async_trait]
impl Action for Search {
    fn check(&self, input: &Map<String, Value>) -> Vec<Violation> {
        self.service.check(input, &["query"])
    }

    fn default_timeout(&self) -> Option<Duration> {
        Some(self.service.timeout())
    }

    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let request = ServiceRequest::post_input(input_object(&call)?, "/v1/search");
        self.service.send(&call, request).await
    }
}

#[async_trait]
impl Action for Extract {
    fn check(&self, input: &Map<String, Value>) -> Vec<Violation> {
        let mut out = self.service.check(input, &["url"]);
        match input.get("url") {
            Some(Value::String(url)) if is_template(url) => {}
            Some(Value::String(url)) => {
                if let Err(e) = parse_http_url(url) {
                    out.push(Violation::new("/url", e.to_string()));
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => out.push(Violation::new("/url", "must be a string")),
        }
        out
    }

    fn default_timeout(&self) -> Option<Duration> {
        Some(self.service.timeout())
    }

    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let input = input_object(&call)?;
        match input.get("url") {
            Some(Value::String(url)) => {
                parse_http_url(url).map_err(|e| Failure::rejected(format!("input.url: {e}")))?;
            }
            _ => return Err(Failure::rejected("input.url must be a string")),
        }
        let request = ServiceRequest::post_input(input, "/v1/extract");
        self.service.send(&call, request).await
    }
}
