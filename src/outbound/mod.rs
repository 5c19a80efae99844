//! Everything that leaves the server over HTTP: the one pooled client ([`HttpClient`]),
//! the outbound policy that keeps calls away from hosts they must not reach
//! ([`policy`]), how a failed call is classified ([`Failure`], [`FailureKind`]) and the
//! one backoff schedule ([`Backoff`]) that retries of steps, hook deliveries and store
//! commits share. Network actions and hook delivery both build on it; it knows nothing of
//! runs or steps.

mod backoff;
mod client;
mod hosts;
pub mod policy;
mod urls;

use std::time::Duration;

use serde_json::Value;

pub use backoff::{Backoff, Jitter};
pub use client::{Body, ClientError, ClientOptions, HttpClient, Request, Response};
pub use hosts::{AddressClass, BadPattern, HostPattern, classify};
pub use policy::{OutboundPolicy, PolicyError};
pub use urls::{UrlError, join, parse_http_url};

/// Why an attempt failed. Retry policies decide from `kind` whether to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    pub http_code: Option<u16>,
    /// The downstream's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// What the downstream answered, kept on the failed step for debugging.
    pub output: Option<Value>,
}

/// The class of a failure, as `retry_on` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The downstream answered with a non-2xx status.
    Status(u16),
    /// The attempt ran out of time.
    Timeout,
    /// The connection could not be made or broke.
    Network,
    /// The call cannot succeed by trying again (bad input, a denied host, a malformed
    /// answer); never retried.
    Rejected,
}

impl Failure {
    /// A failure that retrying cannot fix.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Rejected,
            message: message.into(),
            http_code: None,
            retry_after: None,
            output: None,
        }
    }

    /// The attempt ran out of time after `limit`.
    pub fn timed_out(limit: Duration) -> Self {
        Self {
            kind: FailureKind::Timeout,
            message: format!("timed out after {} ms", limit.as_millis()),
            http_code: None,
            retry_after: None,
            output: None,
        }
    }
}
