//! The worker API (`/v1/tasks/*`, DESIGN §8): poll (long-poll) for tasks, heartbeat, and
//! complete or fail a claim. A claim is proven by the `token` the poll handed out; a stale
//! one (expired, ended, canceled) is `409` and changes nothing.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::body::Document;
use super::schemas::Problem;
use super::{ApiError, AppState};
use crate::actions::task::{MAX_QUEUE_NAME, valid_queue_name};
use crate::engine::tasks::{Handed, MAX_POLL_TASKS, MAX_POLL_WAIT, Poll};
use crate::model::Timestamp;
use crate::store::tasks::TaskRecord;

/// Most queues one poll may name.
pub const MAX_POLL_QUEUES: usize = 32;
/// The longest worker name.
pub const MAX_WORKER_NAME: usize = 128;

/// `POST /v1/tasks/poll`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PollBody {
    /// Queues to claim from (1 to 32 names; unknown names are fine).
    queues: Vec<String>,
    /// The worker's name, listed by `GET /v1/workers`.
    worker: String,
    /// Claim up to this many tasks (1..100, default 1).
    max: Option<u32>,
    /// Wait up to this long for a task (0..30000, default 0: answer at once).
    wait_ms: Option<u32>,
}

/// A task handed to a worker.
#[derive(Serialize, ToSchema)]
pub struct Task {
    /// `task_<ULID>`; the same for every attempt of the step.
    id: String,
    /// Proves this claim to `heartbeat`, `complete` and `fail`; a new one per claim.
    token: String,
    queue: String,
    run_id: String,
    workflow_id: String,
    /// The step's name.
    step: String,
    /// 1 for the first claim, + 1 for each retry or re-delivery.
    attempt: u32,
    /// The step's rendered `payload`.
    #[schema(value_type = Object)]
    payload: Value,
    /// The claim is lost unless a heartbeat (or the end) comes before this.
    #[schema(value_type = String, format = DateTime)]
    lease_expires_at: Timestamp,
    /// Each heartbeat extends the lease by this much.
    heartbeat_ms: u64,
    /// The attempt must end within this long of its claim (none when unset).
    timeout_ms: Option<u64>,
    /// When the task was put on the queue (for this attempt).
    #[schema(value_type = String, format = DateTime)]
    enqueued_at: Timestamp,
}

impl From<Handed> for Task {
    fn from(h: Handed) -> Self {
        let t = h.task;
        Self {
            id: t.id,
            token: h.token,
            queue: t.queue,
            run_id: t.run_id,
            workflow_id: t.workflow_id,
            step: t.step,
            attempt: t.attempt,
            payload: t.payload,
            lease_expires_at: t.lease_expires_at,
            heartbeat_ms: t.heartbeat_ms,
            timeout_ms: t.timeout_ms,
            enqueued_at: t.available_at,
        }
    }
}

/// What a poll claimed.
#[derive(Serialize, ToSchema)]
pub struct TaskList {
    items: Vec<Task>,
}

/// `POST /v1/tasks/{id}/heartbeat`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HeartbeatBody {
    token: String,
    /// Anything the worker wants to say about its progress (at most 16 KiB).
    #[schema(value_type = Object)]
    progress: Option<Value>,
}

/// The answer to a heartbeat.
#[derive(Serialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// True once the run no longer wants the result (canceled): stop working on it.
    cancel: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    lease_expires_at: Option<Timestamp>,
}

/// `POST /v1/tasks/{id}/complete`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CompleteBody {
    token: String,
    /// The step's output (at most `limits.max_output_bytes`).
    #[schema(value_type = Object)]
    output: Option<Value>,
}

/// `POST /v1/tasks/{id}/fail`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FailBody {
    token: String,
    /// Why the attempt failed (at most 16 KiB).
    error: String,
    /// False: do not retry, whatever the step's `retry` allows (default true).
    retryable: Option<bool>,
}

/// The claim as it ended.
#[derive(Serialize, ToSchema)]
pub struct Ended {
    id: String,
    /// `COMPLETED` or `FAILED`.
    status: String,
    run_id: String,
    step: String,
    attempt: u32,
}

impl From<TaskRecord> for Ended {
    fn from(t: TaskRecord) -> Self {
        Self {
            id: t.id,
            status: t.status.as_str().to_owned(),
            run_id: t.run_id,
            step: t.step,
            attempt: t.attempt,
        }
    }
}

/// Takes the fields of `body`, refusing any not in `known`.
fn fields(doc: Document, known: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let body = doc.into_object()?;
    if let Some(field) = body.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            &format!("/{}", crate::expr::escape_pointer(field)),
            format!("unknown field {field:?}; expected {}", known.join(", ")),
        ));
    }
    Ok(body)
}

/// An optional integer field within `range`.
fn bounded(
    body: &Map<String, Value>,
    field: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| range.contains(n))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    &format!("/{field}"),
                    format!(
                        "{field} must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

fn token(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("token") {
        Some(Value::String(t)) if !t.is_empty() && t.len() <= 256 => Ok(t.clone()),
        Some(_) => Err(ApiError::bad_request(
            "/token",
            "token must be the string a poll handed out",
        )),
        None => Err(ApiError::bad_request("/token", "token is required")),
    }
}

fn poll_request(doc: Document) -> Result<Poll, ApiError> {
    let body = fields(doc, &["queues", "worker", "max", "wait_ms"])?;
    let queues = match body.get("queues") {
        Some(Value::Array(items)) if (1..=MAX_POLL_QUEUES).contains(&items.len()) => items,
        Some(_) => {
            return Err(ApiError::bad_request(
                "/queues",
                format!("queues must be an array of 1 to {MAX_POLL_QUEUES} queue names"),
            ));
        }
        None => return Err(ApiError::bad_request("/queues", "queues is required")),
    };
    let mut names: Vec<String> = Vec::with_capacity(queues.len());
    for (i, q) in queues.iter().enumerate() {
        match q.as_str() {
            Some(name) if valid_queue_name(name) => {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
            _ => {
                return Err(ApiError::bad_request(
                    &format!("/queues/{i}"),
                    format!("a queue name has 1 to {MAX_QUEUE_NAME} letters, digits and -_.:/"),
                ));
            }
        }
    }
    let worker = match body.get("worker") {
        Some(Value::String(w))
            if (1..=MAX_WORKER_NAME).contains(&w.len()) && !w.chars().any(char::is_control) =>
        {
            w.clone()
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "/worker",
                format!("worker must be a name of 1 to {MAX_WORKER_NAME} printable characters"),
            ));
        }
        None => return Err(ApiError::bad_request("/worker", "worker is required")),
    };
    let max = bounded(&body, "max", 1..=MAX_POLL_TASKS as u64)?.unwrap_or(1);
    let wait = bounded(&body, "wait_ms", 0..=MAX_POLL_WAIT.as_millis() as u64)?.unwrap_or(0);
    Ok(Poll {
        queues: names,
        worker,
        max: max as usize,
        wait: Duration::from_millis(wait),
    })
}

/// Claims up to `max` tasks of `queues`, waiting up to `wait_ms` for the first.
#[utoipa::path(
    post,
    path = "/v1/tasks/poll",
    tag = "tasks",
    operation_id = "poll_tasks",
    request_body = PollBody,
    responses(
        (status = 200, description = "The tasks claimed (`items` is empty when none came within wait_ms)",
            body = TaskList),
        (status = 400, description = "Bad queues, worker, max or wait_ms", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn poll(
    state: web::Data<AppState>,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let request = poll_request(body)?;
    let handed = state.engine.poll_tasks(request).await?;
    let items: Vec<Task> = handed.into_iter().map(Task::from).collect();
    Ok(HttpResponse::Ok().json(TaskList { items }))
}

/// Extends the claim's lease; tells the worker when the run was canceled.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/heartbeat",
    tag = "tasks",
    operation_id = "heartbeat_task",
    params(("id" = String, Path, description = "Task id")),
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "The lease is extended (or `cancel`)", body = HeartbeatAnswer),
        (status = 400, description = "No token, or progress too large", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Unknown task", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The token is not the live claim's", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn heartbeat(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let mut body = fields(body, &["token", "progress"])?;
    let token = token(&body)?;
    let progress = body.remove("progress").filter(|p| !p.is_null());
    let beat = state.engine.heartbeat_task(&id, &token, progress).await?;
    Ok(HttpResponse::Ok().json(HeartbeatAnswer {
        cancel: beat.cancel,
        lease_expires_at: beat.lease_expires_at,
    }))
}

/// Completes the claim: the step succeeds with `output`.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/complete",
    tag = "tasks",
    operation_id = "complete_task",
    params(("id" = String, Path, description = "Task id")),
    request_body = CompleteBody,
    responses(
        (status = 200, description = "Completed; the run goes on", body = Ended),
        (status = 400, description = "No token, or output over limits.max_output_bytes",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown task", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The token is not the live claim's (expired, ended, canceled)",
            body = Problem, content_type = "application/problem+json")
    )
)]
pub(super) async fn complete(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let mut body = fields(body, &["token", "output"])?;
    let token = token(&body)?;
    let output = body.remove("output").unwrap_or(Value::Null);
    let ended = state.engine.complete_task(&id, &token, output).await?;
    Ok(HttpResponse::Ok().json(Ended::from(ended)))
}

/// Fails the claim; the step's `retry` decides whether the task is handed out again.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/fail",
    tag = "tasks",
    operation_id = "fail_task",
    params(("id" = String, Path, description = "Task id")),
    request_body = FailBody,
    responses(
        (status = 200, description = "Failed; retried or not by the step's retry", body = Ended),
        (status = 400, description = "No token or error", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Unknown task", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The token is not the live claim's (expired, ended, canceled)",
            body = Problem, content_type = "application/problem+json")
    )
)]
pub(super) async fn fail(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let body = fields(body, &["token", "error", "retryable"])?;
    let token = token(&body)?;
    let error = match body.get("error") {
        Some(Value::String(e)) if !e.trim().is_empty() => e.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "/error",
                "error must be a non-empty string",
            ));
        }
        None => return Err(ApiError::bad_request("/error", "error is required")),
    };
    let retryable = match body.get("retryable") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "/retryable",
                "retryable must be true or false",
            ));
        }
    };
    let ended = state
        .engine
        .fail_task(&id, &token, error, retryable)
        .await?;
    Ok(HttpResponse::Ok().json(Ended::from(ended)))
}

/// `{"items": [...]}` of any listing.
pub(super) fn items<T: Serialize>(items: Vec<T>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "items": items }))
}
