//! `/v1/runs`: start (idempotently), list, read, and decide (approve, reject, cancel, retry).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::body::Document;
use super::schemas::{self, DecisionBody as DecisionDoc, Problem, RunList};
use super::{ApiError, AppState, Caller, Paging};
use crate::engine::{Intervention, StartRun};
use crate::model::{Run, RunFilter, RunStatus};

/// The longest `Idempotency-Key` accepted.
const MAX_KEY: usize = 255;

/// Starts a run of a stored workflow; with `Idempotency-Key`, a repeat returns the same run.
#[utoipa::path(
    post,
    path = "/v1/runs",
    tag = "runs",
    operation_id = "start_run",
    params(("Idempotency-Key" = Option<String>, Header,
        description = "A repeat with the same key and body returns the first run (200)")),
    request_body = schemas::StartRun,
    responses(
        (status = 201, description = "Started (or queued as PENDING)", body = Run),
        (status = 200, description = "An idempotent repeat: the first run", body = Run),
        (status = 400, description = "Bad request", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Unknown workflow or version", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The key was used with another body", body = Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn start(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let hash = body_hash(&body.0);
    let mut body = body.into_object()?;
    let workflow_id = match body.remove("workflow_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(_) => {
            return Err(ApiError::bad_request(
                "/workflow_id",
                "workflow_id must be a non-empty string",
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "/workflow_id",
                "workflow_id is required",
            ));
        }
    };
    let version = match body.remove("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|&n| (1..=u32::MAX as u64).contains(&n))
                .ok_or_else(|| {
                    ApiError::bad_request("/version", "version must be a positive integer")
                })? as u32,
        ),
    };
    let context = match body.remove("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::bad_request(
                "/context",
                "context must be a JSON object",
            ));
        }
    };
    if let Some(field) = body.keys().next() {
        return Err(ApiError::bad_request(
            &format!("/{field}"),
            format!("unknown field {field:?}"),
        ));
    }
    let idempotency = idempotency_key(&req)?.map(|key| (key, hash));
    let (run, created) = state
        .engine
        .start_run(StartRun {
            workflow_id,
            version,
            context,
            idempotency,
            parent: None,
        })
        .await?;
    let mut answer = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(answer
        .insert_header(("Location", format!("/v1/runs/{}", run.id)))
        .json(run))
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::bad_request("", "Idempotency-Key must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(ApiError::bad_request(
            "",
            format!("Idempotency-Key must have 1 to {MAX_KEY} characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// A hash of the body's JSON content: key order and whitespace do not matter.
fn body_hash(body: &Value) -> String {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    canonical(body, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    workflow_id: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Runs, newest first.
#[utoipa::path(
    get,
    path = "/v1/runs",
    tag = "runs",
    operation_id = "list_runs",
    params(
        ("workflow_id" = Option<String>, Query, description = "Only runs of this workflow"),
        ("status" = Option<RunStatus>, Query, description = "Only runs with this status"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size (default 50, at most limits.max_page)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")
    ),
    responses(
        (status = 200, description = "A page of runs", body = RunList),
        (status = 400, description = "Bad filter or paging", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn list(
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.to_ascii_uppercase()
                .parse::<RunStatus>()
                .map_err(|_| ApiError::bad_request("/status", format!("unknown status {s:?}")))?,
        ),
    };
    let filter = RunFilter {
        workflow_id: q.workflow_id.clone().filter(|w| !w.is_empty()),
        status,
    };
    let paging = Paging {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let page = state
        .engine
        .list_runs(&filter, &paging.request(&state.limits)?)
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// A run with its steps, attempts and approvals.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    tag = "runs",
    operation_id = "get_run",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = Run),
        (status = 404, description = "Unknown run", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.engine.get_run(&id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

fn decision_body(doc: Document) -> Result<DecisionBody, ApiError> {
    serde_json::from_value(Value::Object(doc.into_object()?))
        .map_err(|e| ApiError::bad_request("", format!("invalid decision: {e}")))
}

/// Approves the waiting step (or `step`); the run resumes.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/approve",
    tag = "runs",
    operation_id = "approve_run",
    params(("id" = String, Path, description = "Run id")),
    request_body(content = DecisionDoc, description = "Optional; `{}` or empty"),
    responses(
        (status = 200, description = "The run after the decision", body = Run),
        (status = 400, description = "Bad body, unknown step, or input against the schema",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "Not waiting for approval, or already decided",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn approve(
    state: web::Data<AppState>,
    id: web::Path<String>,
    caller: Caller,
    doc: Document,
) -> Result<HttpResponse, ApiError> {
    let body = decision_body(doc)?;
    let request = Intervention::Approve {
        step: body.step,
        by: caller.name(),
        comment: body.comment,
        input: body.input,
    };
    Ok(HttpResponse::Ok().json(state.engine.decide(&id, request).await?))
}

/// Rejects the waiting step (or `step`); the run ends `FAILED`.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/reject",
    tag = "runs",
    operation_id = "reject_run",
    params(("id" = String, Path, description = "Run id")),
    request_body(content = DecisionDoc, description = "Optional; `input` is refused"),
    responses(
        (status = 200, description = "The run after the decision", body = Run),
        (status = 400, description = "Bad body, unknown step, or input against the schema",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "Not waiting for approval, or already decided",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn reject(
    state: web::Data<AppState>,
    id: web::Path<String>,
    caller: Caller,
    doc: Document,
) -> Result<HttpResponse, ApiError> {
    let body = decision_body(doc)?;
    if body.input.is_some() {
        return Err(ApiError::bad_request(
            "/input",
            "a rejection takes no input",
        ));
    }
    let request = Intervention::Reject {
        step: body.step,
        by: caller.name(),
        comment: body.comment,
    };
    Ok(HttpResponse::Ok().json(state.engine.decide(&id, request).await?))
}

/// Cancels a run; calls in flight are aborted.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/cancel",
    tag = "runs",
    operation_id = "cancel_run",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The canceled run", body = Run),
        (status = 404, description = "Unknown run", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "Already finished", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn cancel(
    state: web::Data<AppState>,
    id: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let run = state
        .engine
        .decide(&id, Intervention::Cancel { by: caller.name() })
        .await?;
    Ok(HttpResponse::Ok().json(run))
}

/// Re-runs a `FAILED` run from its failed steps.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/retry",
    tag = "runs",
    operation_id = "retry_run",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run, running again", body = Run),
        (status = 404, description = "Unknown run", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The run is not FAILED", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn retry(
    state: web::Data<AppState>,
    id: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.engine.retry_run(&id, &caller.name()).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_hashes_ignore_key_order_but_not_values() {
        let a = body_hash(&json!({"workflow_id": "w", "context": {"a": 1, "b": [1, 2]}}));
        let b = body_hash(&json!({"context": {"b": [1, 2], "a": 1}, "workflow_id": "w"}));
        let c = body_hash(&json!({"context": {"b": [2, 1], "a": 1}, "workflow_id": "w"}));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
