//! `POST /v1/runs/{id}/events/{name}`: an event sent to a run, for its `event` step (a CI
//! callback, a human's answer from another system). A step that waits takes it at once;
//! an event that arrives first is kept on the run for the step that will wait for it.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::Value;

use super::body::Document;
use super::schemas::{EventBody, Problem};
use super::{ApiError, AppState, Caller};
use crate::model::Run;

/// The longest event name.
const MAX_NAME: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    data: Value,
}

/// Sends event `name` to a run.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/events/{name}",
    tag = "runs",
    operation_id = "send_run_event",
    params(
        ("id" = String, Path, description = "Run id"),
        ("name" = String, Path, description = "The event name an `event` step waits for"),
    ),
    request_body(content = EventBody, description = "`{\"data\": …}`; empty means null data"),
    responses(
        (status = 200, description = "Taken by the waiting step, or kept for the step that will wait", body = Run),
        (status = 400, description = "Bad body or name, or data against the step's schema",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "No open step of the run waits for this event, or the run is finished",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn send(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    caller: Caller,
    doc: Document,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    check_name(&name)?;
    let body: Body = serde_json::from_value(Value::Object(doc.into_object()?))
        .map_err(|e| ApiError::bad_request("", format!("invalid event: {e}")))?;
    let run: Run = state
        .engine
        .send_event(&id, &name, body.data, &caller.name())
        .await?;
    Ok(HttpResponse::Ok().json(run))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "/name",
        format!("an event name is 1 to {MAX_NAME} of A-Z a-z 0-9 _ - . :"),
    ))
}
