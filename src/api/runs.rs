//! `/v1/runs`: start (idempotently), read, and decide (approve, reject, cancel). Search is
//! in [`super::run_search`], re-runs in [`super::rerun`], deletion in [`super::deletion`].

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, mime, web};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::body::Document;
use super::schemas::{self, DecisionBody as DecisionDoc, Problem};
use super::{ApiError, AppState, Caller};
use crate::engine::{EngineError, Intervention, StartRun};
use crate::model::Run;

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
            trigger: None,
            schedule: None,
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

/// A run with its steps, attempts and approvals. A run executing on this server is
/// answered from its view at the latest committed revision, without a store read;
/// `Cache-Control: no-cache` reads the store. The `ETag` is the run's revision, and
/// `If-None-Match` with it answers `304` without a body.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    tag = "runs",
    operation_id = "get_run",
    params(
        ("id" = String, Path, description = "Run id"),
        ("If-None-Match" = Option<String>, Header,
            description = "An ETag from an earlier read: 304 while the run is unchanged"),
        ("Cache-Control" = Option<String>, Header,
            description = "`no-cache` reads the store rather than this server's view of the run")
    ),
    responses(
        (status = 200, description = "The run; `ETag` names its revision", body = Run),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 404, description = "Unknown run (or deleted: the detail says by whom)",
            body = Problem, content_type = "application/problem+json")
    )
)]
pub(super) async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let fresh = header_items(&req, header::CACHE_CONTROL).any(|d| d == "no-cache");
    match state.engine.read_run(&id, fresh).await {
        Ok(doc) => {
            let tag = format!("\"{}\"", doc.rev);
            // Weak comparison (RFC 9110 §13.1.2): `W/"5"` matches `"5"`; `*` any run.
            let unchanged = header_items(&req, header::IF_NONE_MATCH)
                .any(|t| t == "*" || t.trim_start_matches("W/") == tag);
            if unchanged {
                return Ok(HttpResponse::NotModified()
                    .insert_header((header::ETAG, tag))
                    .finish());
            }
            Ok(HttpResponse::Ok()
                .content_type(mime::APPLICATION_JSON)
                .insert_header((header::ETAG, tag))
                .body(doc.body))
        }
        Err(EngineError::NotFound(what)) => {
            Err(super::deletion::not_found(&state, &id, what).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// The comma-separated items of every `name` header, trimmed.
fn header_items(req: &HttpRequest, name: header::HeaderName) -> impl Iterator<Item = &str> {
    req.headers()
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
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
