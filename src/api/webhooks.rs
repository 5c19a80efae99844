//! `POST /hooks/{name}`: a webhook delivery starts a run of the trigger's workflow.
//!
//! The recipe: find the trigger, read the body (`413` past `limits.body_bytes`), admit the
//! caller (its signature or token, or an admin token for a trigger without a secret; `401`
//! with nothing stored otherwise), apply the `filter`, render the `context`, and start the
//! run with the request kept on it. A delivery id (`X-GitHub-Delivery`,
//! `X-Gitlab-Event-UUID` or `Idempotency-Key`) becomes the run's idempotency key, so a
//! redelivery answers with the first run instead of starting another.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::body::read_limited;
use super::schemas::Problem;
use super::{ApiError, AppState, auth};
use crate::engine::StartRun;
use crate::model::RunTrigger;
use crate::problems::Violation;
use crate::store::StoreError;
use crate::triggers::{Delivery, Mapping, RenderError};

/// The longest delivery id accepted (it becomes part of an idempotency key).
const MAX_DELIVERY_ID: usize = 200;

/// The answer of a delivery.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // described, never built
pub struct Delivered {
    /// The run started (or the first run of a repeated delivery); `null` when the filter
    /// was false.
    run_id: Option<String>,
}

/// Starts a run from a webhook delivery.
#[utoipa::path(
    post,
    path = "/hooks/{name}",
    tag = "triggers",
    operation_id = "deliver_webhook",
    params(
        ("name" = String, Path, description = "Trigger name"),
        ("X-Hub-Signature-256" = Option<String>, Header,
            description = "`sha256=<hex HMAC-SHA256 of the raw body>` under the trigger's secret"),
        ("X-Gitlab-Token" = Option<String>, Header,
            description = "The secret itself, for triggers with secret_header X-Gitlab-Token"),
        ("X-GitHub-Delivery" = Option<String>, Header,
            description = "Delivery id; a repeat answers with the first run \
                           (also X-Gitlab-Event-UUID, Idempotency-Key)")
    ),
    request_body(content = Object, description = "Any body: JSON is parsed for `request.body`, \
        anything else is passed as text", content_type = "*/*"),
    responses(
        (status = 202, description = "A run was started", body = Delivered),
        (status = 200, description = "The filter was false (`run_id` null), or a repeated \
            delivery (the first run)", body = Delivered),
        (status = 400, description = "The context or filter failed to render for this \
            request; the pointer names the trigger's template", body = Problem,
            content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong signature (nothing is stored), or no \
            admin token for a trigger without a secret", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Unknown trigger", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The delivery id was used with another body", body = Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn deliver(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let trigger = match state.store.get_webhook(&name).await {
        Ok(t) => t,
        Err(StoreError::NotFound(_)) => {
            return Err(auth::unknown_trigger(&state.auth, req.headers(), &name));
        }
        Err(e) => return Err(e.into()),
    };
    let outcome = |what: &str| state.metrics.webhook_delivery(&trigger.name, what);
    let mut payload = payload.into_inner();
    let body = read_limited(&req, &mut payload, state.limits.body_bytes)
        .await
        .inspect_err(|_| outcome("invalid"))?;
    auth::admit_delivery(&state.auth, req.headers(), &trigger, &body)
        .inspect_err(|_| outcome("unauthorized"))?;
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())));
    let delivery = Delivery::new(headers, req.query_string(), &body);
    let mapping = Mapping::compile(trigger.context.as_ref(), trigger.filter.as_deref())
        .map_err(|errors| ApiError::BadRequest {
            detail: format!("trigger {} no longer compiles", trigger.name),
            errors,
        })
        .inspect_err(|_| outcome("invalid"))?;
    if !mapping
        .passes(&delivery)
        .map_err(|e| render_error(&trigger.name, e))
        .inspect_err(|_| outcome("invalid"))?
    {
        outcome("filtered");
        return Ok(HttpResponse::Ok().json(json!({"run_id": null})));
    }
    let context = mapping
        .render(&delivery)
        .map_err(|e| render_error(&trigger.name, e))
        .inspect_err(|_| outcome("invalid"))?;
    let delivery_id = delivery.id().map(str::to_owned);
    if delivery_id
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DELIVERY_ID)
    {
        outcome("invalid");
        return Err(ApiError::bad_request(
            "",
            format!("the delivery id is longer than {MAX_DELIVERY_ID} characters"),
        ));
    }
    let idempotency = delivery_id.as_ref().map(|d| {
        let hash = hex::encode(Sha256::digest(&body));
        (format!("hook/{}/{d}", trigger.name), hash)
    });
    let started = state
        .engine
        .start_run(StartRun {
            workflow_id: trigger.workflow_id.clone(),
            version: None,
            context,
            idempotency,
            parent: None,
            trigger: Some(RunTrigger::Webhook {
                name: trigger.name.clone(),
                delivery: delivery_id,
                request: Some(delivery.kept(state.triggers.request_bytes)),
            }),
            schedule: None,
        })
        .await
        .inspect_err(|_| outcome("failed"))?;
    let (run, created) = started;
    if created {
        outcome("started");
        Ok(HttpResponse::Accepted().json(json!({"run_id": run.id})))
    } else {
        outcome("duplicate");
        Ok(HttpResponse::Ok().json(json!({"run_id": run.id})))
    }
}

/// A template of the trigger failed for this request: `400` at the template's pointer.
/// The sender sees the answer; the operator sees it in the server log (no run is made).
fn render_error(trigger: &str, e: RenderError) -> ApiError {
    tracing::warn!(trigger, pointer = %e.pointer, error = %e.source, "a webhook delivery's template failed; no run started");
    ApiError::BadRequest {
        detail: format!(
            "the trigger's template at {} failed for this request: {}",
            e.pointer, e.source
        ),
        errors: vec![Violation::new(e.pointer, e.source.to_string())],
    }
}
