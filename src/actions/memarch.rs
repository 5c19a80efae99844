//! `memarch.store_fact` and `memarch.search`: the memory archive. `store_fact` sends its
//! input (the fact payload) to `memarch.base_url` + `/v1/facts`; `search` sends its input
//! (the query payload, with `query`) to `memarch.base_url` + `/v1/search`. Either may name
//! an absolute `endpoint` instead. Output: `{status, headers, body}`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::service::{ENDPOINT, Service, ServiceRequest, input_object};
use super::{Action, Call, Failure, Outcome};
use crate::problems::Violation;

/// The `memarch.store_fact` action.
pub struct StoreFact {
    service: Service,
}

/// The `memarch.search` action.
pub struct Search {
    service: Service,
}

impl StoreFact {
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

impl Search {
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

#[async_trait]
impl Action for StoreFact {
    fn check(&self, input: &Map<String, Value>) -> Vec<Violation> {
        let mut out = self.service.check(input, &[]);
        if input.keys().all(|k| k == ENDPOINT) {
            out.push(Violation::new("", "the fact to store is empty"));
        }
        out
    }

    fn default_timeout(&self) -> Option<Duration> {
        Some(self.service.timeout())
    }

    async fn execute(&self, call: Call) -> Result<Outcome, Failure> {
        let request = ServiceRequest::post_input(input_object(&call)?, "/v1/facts");
        self.service.send(&call, request).await
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
