//! `POST /v1/runs/{id}/retry`: run a finished run again from a step, with context members
//! set or on another version (see [`crate::engine::rerun`]). The body is optional; an
//! empty one re-runs from the first failed step, as the Go service did.

use actix_web::{HttpResponse, web};
use serde_json::{Map, Value};

use super::body::Document;
use super::schemas::{Problem, RetryBody};
use super::{ApiError, AppState, Caller};
use crate::engine::RetryRequest;
use crate::model::Run;

/// The longest `reason` kept in a run's history.
const MAX_REASON_CHARS: usize = 1000;

/// The members of a retry body, each checked at its pointer.
fn retry_request(doc: Document, by: String) -> Result<RetryRequest, ApiError> {
    let mut body = doc.into_object()?;
    let text = |body: &mut Map<String, Value>, name: &str| match body.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(
            &format!("/{name}"),
            format!("{name} must be a non-empty string"),
        )),
    };
    let from_step = text(&mut body, "from_step")?;
    let reason = text(&mut body, "reason")?;
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApiError::bad_request(
            "/reason",
            format!("reason is longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    let context = match body.remove("context") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => {
            return Err(ApiError::bad_request(
                "/context",
                "context must be a JSON object",
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
    if let Some(field) = body.keys().next() {
        return Err(ApiError::bad_request(
            &format!("/{field}"),
            format!("unknown field {field:?} (a retry takes from_step, context, version, reason)"),
        ));
    }
    Ok(RetryRequest {
        from_step,
        context,
        version,
        reason,
        by,
    })
}

/// Re-runs a finished run from a step (Temporal's *reset*), optionally with context members
/// set or on another version; earlier attempts stay on the run under `retries`.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/retry",
    tag = "runs",
    operation_id = "retry_run",
    params(("id" = String, Path, description = "Run id")),
    request_body(content = RetryBody, description = "Optional; empty: from the first failed step"),
    responses(
        (status = 200, description = "The run, running again", body = Run),
        (status = 400, description = "Bad body, unknown from_step or version, or a version whose \
            steps before from_step differ from the run's", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The run is not finished, has no failed step and no \
            from_step was given, or its workflow is archived", body = Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn retry(
    state: web::Data<AppState>,
    id: web::Path<String>,
    caller: Caller,
    doc: Document,
) -> Result<HttpResponse, ApiError> {
    let request = retry_request(doc, caller.name())?;
    Ok(HttpResponse::Ok().json(state.engine.retry_run(&id, request).await?))
}
