//! HTTP access to the server: one [`Api`] per invocation, every answer either JSON or a
//! [`ClientError`] that says what went wrong in words a terminal user can act on.
//!
//! Error answers are `application/problem+json`; they become [`Problem`]s with their
//! title, detail and each pointer. Anything that keeps the request from reaching the server
//! (refused, unresolvable, timed out) is [`ClientError::Unreachable`], exit code 2.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

/// How long a request (other than a log stream) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence on a log stream after which the connection counts as lost. The server sends
/// keep-alive comments every 15 s by default (`logs.keep_alive`).
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(90);
/// How long an idle pooled connection is kept for reuse: shorter than the server keeps an
/// idle connection open (75 s), so the client never sends on one the server is closing
/// (the request would fail with "connection closed before message completed").
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Why a client command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad input on this side (a file, a flag's value): nothing was sent. Exit 2.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached, or the connection broke. Exit 2.
    #[error("cannot reach the server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The server answered with an error. Exit 1.
    #[error("{0}")]
    Refused(Problem),
    /// The server answered something this client does not understand. Exit 2.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// Writing the output failed (a closed pipe ends the command quietly).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl ClientError {
    /// The process exit code for this error (DESIGN §13).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused(_) => 1,
            Self::Usage(_) | Self::Unreachable { .. } | Self::Protocol(_) | Self::Output(_) => 2,
        }
    }

    /// True when the server could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// True for errors a retry may cure: the connection, or a server that is busy or
    /// restarting (503, and 502/504 from a proxy in front of it).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused(p) => matches!(p.status, 502..=504),
            _ => false,
        }
    }
}

/// An error answer: RFC 9457 `problem+json`, or the status line of anything else.
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub errors: Vec<Pointer>,
}

/// One violation of a `400`: where and what.
#[derive(Debug, Clone, Deserialize)]
pub struct Pointer {
    #[serde(default)]
    pub pointer: String,
    #[serde(default)]
    pub message: String,
}

impl Problem {
    /// Reads an error answer; a body that is not `problem+json` keeps its first line.
    fn from_body(status: StatusCode, body: &str) -> Self {
        let mut problem = serde_json::from_str::<Problem>(body).unwrap_or_else(|_| Problem {
            status: status.as_u16(),
            title: String::new(),
            detail: body
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect(),
            errors: Vec::new(),
        });
        problem.status = status.as_u16();
        if problem.title.is_empty() {
            problem.title = status.canonical_reason().unwrap_or("Error").to_owned();
        }
        problem
    }
}

impl Problem {
    /// True when the detail only restates the first violation (the server's summary of a
    /// `400`), which is printed with its pointer anyway.
    fn detail_repeats_first_error(&self) -> bool {
        self.errors.first().is_some_and(|e| {
            self.detail == e.message
                || self
                    .detail
                    .starts_with(&format!("{}: {}", e.pointer, e.message))
        })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.title)?;
        if !self.detail.is_empty() && !self.detail_repeats_first_error() {
            write!(f, ": {}", self.detail)?;
        }
        for e in &self.errors {
            let pointer = if e.pointer.is_empty() {
                "/"
            } else {
                &e.pointer
            };
            write!(f, "\n  {pointer}: {}", e.message)?;
        }
        match self.status {
            401 => write!(
                f,
                "\n  (the token is missing or wrong: set --token or ORCHESTRATOR_TOKEN)"
            ),
            403 => write!(f, "\n  (the token's role may not do this)"),
            _ => Ok(()),
        }
    }
}

/// The server at `--server`, reached with `--token`.
#[derive(Clone)]
pub struct Api {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
    streams: reqwest::Client,
}

impl Api {
    /// A client for `server` (an http or https URL).
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = Url::parse(server)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "--server {server:?} is not an http(s) URL such as http://127.0.0.1:8100"
                ))
            })?;
        let build = |builder: reqwest::ClientBuilder| {
            builder
                .connect_timeout(CONNECT_TIMEOUT)
                .pool_idle_timeout(POOL_IDLE)
                .user_agent(concat!("orchestrator-cli/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ClientError::Usage(format!("cannot build the HTTP client: {e}")))
        };
        Ok(Self {
            http: build(reqwest::Client::builder().timeout(REQUEST_TIMEOUT))?,
            streams: build(reqwest::Client::builder().read_timeout(STREAM_READ_TIMEOUT))?,
            token: token.filter(|t| !t.is_empty()),
            base,
        })
    }

    /// The URL of the path made of `segments` (each percent-encoded) under the base URL.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `GET` with query parameters; the JSON answer.
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        let request = self.http.get(self.url(segments)).query(query);
        self.json(request).await
    }

    /// `GET`, or `None` on `404`.
    pub async fn get_optional(&self, segments: &[&str]) -> Result<Option<Value>, ClientError> {
        match self.get(segments, &[]).await {
            Err(ClientError::Refused(p)) if p.status == 404 => Ok(None),
            other => other.map(Some),
        }
    }

    /// `DELETE`; the JSON answer (`null` for `204`).
    pub async fn delete(&self, segments: &[&str]) -> Result<Value, ClientError> {
        let request = self.http.delete(self.url(segments));
        self.json(request).await
    }

    /// `POST` or `PUT` with a JSON body; the JSON answer.
    pub async fn send(
        &self,
        method: Method,
        segments: &[&str],
        body: &Value,
    ) -> Result<Value, ClientError> {
        let request = self.http.request(method, self.url(segments)).json(body);
        self.json(request).await
    }

    /// Opens `GET /v1/runs/{id}/logs/stream`, resuming after `last_seq`; the `200` answer.
    pub async fn log_stream(
        &self,
        run: &str,
        last_seq: Option<u64>,
    ) -> Result<reqwest::Response, ClientError> {
        self.stream(&["v1", "runs", run, "logs", "stream"], &[], last_seq)
            .await
    }

    /// Opens a Server-Sent Events stream, resuming after `last_id` (`Last-Event-ID`); the
    /// `200` answer.
    pub async fn stream(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        last_id: Option<u64>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self
            .streams
            .get(self.url(segments))
            .query(query)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = self.execute(request).await?;
        checked(response).await
    }

    /// The error for a connection that broke while an answer was being read.
    pub fn broken(&self, error: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            server: self.base.as_str().trim_end_matches('/').to_owned(),
            reason: reason(error),
        }
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let response = checked(self.execute(request).await?).await?;
        let bytes = response.bytes().await.map_err(|e| self.broken(&e))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("not JSON: {e}")))
    }

    async fn execute(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request.send().await.map_err(|e| self.broken(&e))
    }
}

/// The answer when it is a success, else its [`Problem`].
async fn checked(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(ClientError::Refused(Problem::from_body(status, &body)))
}

/// The most specific cause of a transport error, in a few words.
fn reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut source = error.source();
    let mut last = None;
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind().to_string();
        }
        last = Some(cause.to_string());
        source = cause.source();
    }
    last.unwrap_or_else(|| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_print_title_detail_and_every_pointer() {
        let body = r#"{"type":"x","title":"Invalid workflow definition","status":400,
            "detail":"2 problems","errors":[{"pointer":"/steps/1/name","message":"duplicate"},
            {"pointer":"","message":"top"}]}"#;
        let problem = Problem::from_body(StatusCode::BAD_REQUEST, body);
        assert_eq!(
            problem.to_string(),
            "400 Invalid workflow definition: 2 problems\n  /steps/1/name: duplicate\n  /: top"
        );
    }

    #[test]
    fn a_detail_that_restates_the_first_violation_is_not_printed_twice() {
        let body = r#"{"title":"Invalid workflow definition","status":400,
            "detail":"/steps/1/name: duplicate (and 1 more problems)",
            "errors":[{"pointer":"/steps/1/name","message":"duplicate"},{"pointer":"/steps/1/action","message":"unknown"}]}"#;
        assert_eq!(
            Problem::from_body(StatusCode::BAD_REQUEST, body).to_string(),
            "400 Invalid workflow definition\n  /steps/1/name: duplicate\n  /steps/1/action: unknown"
        );
    }

    #[test]
    fn a_non_problem_error_answer_keeps_its_status_and_first_line() {
        let problem = Problem::from_body(StatusCode::BAD_GATEWAY, "<html>upstream down\n</html>");
        assert_eq!(problem.to_string(), "502 Bad Gateway: <html>upstream down");
        assert!(ClientError::Refused(problem).is_transient());
    }

    #[test]
    fn a_401_says_where_the_token_comes_from() {
        let problem = Problem::from_body(
            StatusCode::UNAUTHORIZED,
            r#"{"title":"Unauthorized","detail":"invalid token"}"#,
        );
        let text = problem.to_string();
        assert!(
            text.starts_with("401 Unauthorized: invalid token"),
            "{text}"
        );
        assert!(text.contains("ORCHESTRATOR_TOKEN"), "{text}");
    }

    #[test]
    fn urls_keep_a_base_path_and_encode_segments() {
        let api = Api::new("http://example.test:8100/orch/", None).unwrap();
        assert_eq!(
            api.url(&["v1", "workflows", "a b/c"]).as_str(),
            "http://example.test:8100/orch/v1/workflows/a%20b%2Fc"
        );
        assert!(matches!(
            Api::new("127.0.0.1:8100", None),
            Err(ClientError::Usage(_))
        ));
    }
}
