//! The one outbound HTTP path of network actions and hooks: a pooled `reqwest` client,
//! the outbound policy ([`super::policy`]), the `Idempotency-Key` header, response
//! decoding to `{status, headers, body}` (reading at most `max_body_bytes` of a body), and
//! the classification of failures (status, timeout, network, refused) that retries act on.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::{Map, Value, json};
use url::Url;

use super::policy::{self, Denied, OutboundPolicy, PolicyResolver};
use super::{Failure, FailureKind};
use crate::size;

/// A shared, pooled HTTP client. Cloning is cheap and shares the pool.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
    policy: Option<Arc<OutboundPolicy>>,
    max_body_bytes: usize,
}

/// How a client is built.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The outbound policy every call is checked against; `None` checks nothing (for hook
    /// delivery, whose targets the operator configured).
    pub policy: Option<Arc<OutboundPolicy>>,
    /// Response bodies are read up to this size; a longer body is not read further and
    /// becomes a truncation marker (see [`crate::size`]).
    pub max_body_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            policy: Some(Arc::new(OutboundPolicy::default())),
            max_body_bytes: size::DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// Why the HTTP client could not be built. The message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No CA certificate could be loaded, so no HTTPS server could be verified: the
    /// client uses the system's store (or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set) and
    /// bundles no roots of its own.
    #[error(
        "no CA certificates found{cause}: install the ca-certificates package, or set SSL_CERT_FILE to a PEM bundle of CA certificates (or SSL_CERT_DIR to a directory of them)"
    )]
    NoCaCertificates { cause: String },
    #[error(transparent)]
    Build(#[from] reqwest::Error),
}

/// A request body: JSON, or text sent as it is.
#[derive(Debug, Clone)]
pub enum Body {
    Json(Value),
    Text(String),
}

/// A 2xx answer: its status and `{status, headers, body}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub output: Value,
}

/// One outbound request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub body: Option<Body>,
    pub idempotency_key: String,
}

impl HttpClient {
    /// A client with the default options: the always-on part of the outbound policy
    /// (link-local and metadata addresses denied) and the default body limit.
    pub fn new() -> Result<Self, ClientError> {
        Self::with_options(ClientOptions::default())
    }

    /// Builds the client every action shares.
    pub fn with_options(options: ClientOptions) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("orchestrator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(512)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        if let Some(policy) = &options.policy {
            builder = builder
                .dns_resolver(Arc::new(PolicyResolver::new(policy.clone())))
                .redirect(policy::redirect_policy(policy.clone()));
        }
        Ok(Self {
            inner: builder.build().map_err(build_error)?,
            policy: options.policy,
            max_body_bytes: options.max_body_bytes,
        })
    }

    /// Sends `request`; a 2xx answer is a [`Response`], anything else a [`Failure`]
    /// carrying the answer. A call the outbound policy denies fails at once (never
    /// retried) and is not sent.
    pub async fn send(&self, request: Request) -> Result<Response, Failure> {
        if let Some(policy) = &self.policy
            && let Err(denied) = policy.check_url(&request.url)
        {
            let target = Target {
                method: &request.method,
                url: &request.url,
                call: &request.idempotency_key,
            };
            return Err(denied_failure(target, &denied));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Failure::rejected(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| Failure::rejected(format!("invalid value for header {name}")))?;
            headers.insert(name, value);
        }
        if !headers.contains_key("idempotency-key") {
            let key = HeaderValue::from_str(&request.idempotency_key).map_err(|_| {
                Failure::rejected("run id and step name do not form a valid header")
            })?;
            headers.insert("idempotency-key", key);
        }
        let mut builder = self
            .inner
            .request(request.method.clone(), request.url.clone())
            .headers(headers.clone());
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        builder = match request.body {
            None => builder,
            Some(Body::Json(v)) => builder.json(&v),
            Some(Body::Text(t)) => {
                if headers.contains_key(CONTENT_TYPE) {
                    builder.body(t)
                } else {
                    builder
                        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                        .body(t)
                }
            }
        };
        let target = Target {
            method: &request.method,
            url: &request.url,
            call: &request.idempotency_key,
        };
        let response = builder
            .send()
            .await
            .map_err(|e| transport_failure(target, &e))?;
        decode(target, response, self.max_body_bytes).await
    }
}

/// What a call's messages name it by, `METHOD URL`: written only when a message is. `call`
/// is its idempotency key (`<run id>/<step>` for a step), for the server's log.
#[derive(Clone, Copy)]
struct Target<'a> {
    method: &'a reqwest::Method,
    url: &'a Url,
    call: &'a str,
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.url)
    }
}

/// What stopped the client from being built. reqwest only says "builder error" when its
/// TLS verifier finds no CA certificates, so look at the store ourselves to say so.
fn build_error(e: reqwest::Error) -> ClientError {
    let store = rustls_native_certs::load_native_certs();
    if store.certs.is_empty() {
        let cause = store
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return ClientError::NoCaCertificates { cause };
    }
    ClientError::Build(e)
}

fn denied_failure(target: Target<'_>, denied: &Denied) -> Failure {
    // `request`, not `target`: JSON lines keep `target` for the module that logged.
    tracing::warn!(
        request = %target,
        call = target.call,
        host = %denied.host,
        reason = %denied.reason,
        "outbound call denied"
    );
    Failure::rejected(format!("{target}: {denied}"))
}

fn transport_failure(target: Target<'_>, e: &reqwest::Error) -> Failure {
    if let Some(denied) = policy::find_denied(e) {
        return denied_failure(target, denied);
    }
    let kind = if e.is_timeout() {
        FailureKind::Timeout
    } else if e.is_builder() {
        FailureKind::Rejected
    } else {
        FailureKind::Network
    };
    Failure {
        kind,
        message: format!("{target}: {}", crate::problems::chain(e)),
        http_code: None,
        retry_after: None,
        output: None,
    }
}

/// A response body as read.
enum ReadBody {
    Whole(Vec<u8>),
    /// The body was longer than the limit and was not read further: its size (declared,
    /// or at least what was read) and its start.
    TooLong {
        original_bytes: u64,
        start: Vec<u8>,
    },
}

/// Reads the body up to `limit` bytes.
async fn read_body(
    target: Target<'_>,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<ReadBody, Failure> {
    let declared = response.content_length();
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_failure(target, &e))?
    {
        if bytes.len() + chunk.len() > limit {
            let read = (bytes.len() + chunk.len()) as u64;
            bytes.extend_from_slice(&chunk[..size::PREVIEW_BYTES.min(chunk.len())]);
            return Ok(ReadBody::TooLong {
                original_bytes: declared.unwrap_or(read).max(read),
                start: bytes,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(ReadBody::Whole(bytes))
}

async fn decode(
    target: Target<'_>,
    response: reqwest::Response,
    max_body_bytes: usize,
) -> Result<Response, Failure> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let mime = ct.split(';').next().unwrap_or_default().trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        });
    let headers: Map<String, Value> =
        response
            .headers()
            .iter()
            .fold(Map::new(), |mut map, (name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                match map.get_mut(name.as_str()) {
                    Some(Value::String(existing)) => {
                        existing.push_str(", ");
                        existing.push_str(&value);
                    }
                    _ => {
                        map.insert(name.as_str().to_owned(), Value::String(value));
                    }
                }
                map
            });
    let bytes = match read_body(target, response, max_body_bytes).await? {
        ReadBody::Whole(bytes) => bytes,
        ReadBody::TooLong {
            original_bytes,
            start,
        } => {
            let preview = size::cut_bytes(&start, size::PREVIEW_BYTES);
            let body = size::marker(original_bytes, preview);
            return finish(target, status, retry_after, headers, body);
        }
    };
    let body = if bytes.is_empty() {
        Value::Null
    } else if is_json {
        serde_json::from_slice(&bytes).map_err(|e| Failure {
            kind: FailureKind::Rejected,
            message: format!("{target}: HTTP {status} with invalid JSON body: {e}"),
            http_code: Some(status),
            retry_after: None,
            output: Some(json!({"status": status, "body": String::from_utf8_lossy(&bytes)})),
        })?
    } else {
        Value::String(String::from_utf8_lossy(&bytes).into_owned())
    };
    finish(target, status, retry_after, headers, body)
}

/// A 2xx answer is a response, anything else a failure carrying the answer.
fn finish(
    target: Target<'_>,
    status: u16,
    retry_after: Option<Duration>,
    headers: Map<String, Value>,
    body: Value,
) -> Result<Response, Failure> {
    // Built by moving its parts in: `json!` would copy `headers` and `body` through serde.
    let mut output = Map::with_capacity(3);
    output.insert("status".to_owned(), status.into());
    output.insert("headers".to_owned(), Value::Object(headers));
    output.insert("body".to_owned(), body);
    let output = Value::Object(output);
    if (200..300).contains(&status) {
        return Ok(Response { status, output });
    }
    Err(Failure {
        kind: FailureKind::Status(status),
        message: format!("{target}: HTTP {status}"),
        http_code: Some(status),
        retry_after,
        output: Some(output),
    })
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_denied_calls_warning_names_the_call_it_refused() {
        let buffer = crate::telemetry::Buffer::default();
        let filter = tracing_subscriber::EnvFilter::new("info");
        let _log = tracing::subscriber::set_default(crate::telemetry::json_subscriber(
            filter,
            buffer.clone(),
        ));
        let policy = OutboundPolicy::new(&[], &["blocked.example".to_owned()], false, [])
            .expect("a valid policy");
        let client = HttpClient::with_options(ClientOptions {
            policy: Some(Arc::new(policy)),
            max_body_bytes: 1024,
        })
        .unwrap();
        let failure = client
            .send(Request {
                method: reqwest::Method::GET,
                url: Url::parse("http://blocked.example/x").unwrap(),
                headers: Vec::new(),
                query: Vec::new(),
                body: None,
                idempotency_key: "run_1/fetch".to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::Rejected);
        assert!(
            failure
                .message
                .starts_with("GET http://blocked.example/x: ")
        );
        let lines = crate::telemetry::lines(&buffer);
        let line = lines.first().expect("a warning");
        assert_eq!(line["message"], "outbound call denied");
        assert_eq!(line["call"], "run_1/fetch");
        assert_eq!(line["request"], "GET http://blocked.example/x");
        assert_eq!(line["target"], "orchestrator::outbound::client");
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
