//! `/v1/triggers`: webhook triggers (DESIGN §10): create, list, read, delete. Deliveries
//! arrive at `POST /hooks/{name}` (see [`super::webhooks`]).
//!
//! A trigger's `context` and `filter` are compiled when it is created, so a template that
//! does not parse (or reads anything but `request`) is a `400` at its pointer then, not at
//! the first delivery. The secret is stored but never served.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::body::Document;
use super::fields::Fields;
use super::schemas::Problem;
use super::{ApiError, AppState, Caller};
use crate::model::{Timestamp, now};
use crate::secret::Secret;
use crate::store::{SecretHeader, StoreError, WebhookTrigger};
use crate::triggers::Mapping;

/// A webhook trigger as served (never its secret).
#[derive(Serialize, ToSchema)]
pub struct TriggerView {
    name: String,
    workflow_id: String,
    /// Where deliveries go: `/hooks/{name}`.
    url: String,
    /// Deliveries must be signed (or carry the token); without a secret they need an
    /// admin token.
    has_secret: bool,
    /// The header that proves a delivery, when there is a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_header: Option<SecretHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
}

impl From<WebhookTrigger> for TriggerView {
    fn from(t: WebhookTrigger) -> Self {
        Self {
            url: format!("/hooks/{}", t.name),
            has_secret: t.secret.is_some(),
            secret_header: t.secret.as_ref().map(|_| t.secret_header),
            name: t.name,
            workflow_id: t.workflow_id,
            context: t.context,
            filter: t.filter,
            created_at: t.created_at,
            created_by: t.created_by,
        }
    }
}

/// Every webhook trigger.
#[derive(Serialize, ToSchema)]
pub struct TriggerList {
    items: Vec<TriggerView>,
}

/// `POST /v1/triggers`.
#[derive(ToSchema)]
#[allow(dead_code)] // described, never built
pub struct TriggerBody {
    /// Letters, digits, `.`, `_`, `-`; the delivery URL is `/hooks/{name}`.
    name: String,
    workflow_id: String,
    /// Signs deliveries (HMAC-SHA256 of the body in `X-Hub-Signature-256`), or is sent as
    /// is in `X-Gitlab-Token` (see `secret_header`). Without one, deliveries need an
    /// admin token.
    secret: Option<String>,
    /// `X-Hub-Signature-256` (default) or `X-Gitlab-Token`.
    secret_header: Option<SecretHeader>,
    /// An object of templates over `request.body`, `request.headers`, `request.query`:
    /// the run's context.
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// An expression over `request`; false answers `200 {"run_id": null}`.
    filter: Option<String>,
}

/// Creates a webhook trigger.
#[utoipa::path(
    post,
    path = "/v1/triggers",
    tag = "triggers",
    operation_id = "create_trigger",
    request_body = TriggerBody,
    responses(
        (status = 201, description = "Created", body = TriggerView),
        (status = 400, description = "Unknown workflow, a template or filter that does not parse",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    doc: Document,
) -> Result<HttpResponse, ApiError> {
    let mut f = Fields::of(doc)?;
    let name = f.name("name", true);
    let workflow_id = f.string("workflow_id", true);
    let secret = f.string("secret", false).map(Secret::new);
    let secret_header = match f.string("secret_header", false).map(|h| h.parse()) {
        None => SecretHeader::default(),
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            f.refuse("secret_header", e);
            SecretHeader::default()
        }
    };
    let context = f.value("context");
    let filter = f.string("filter", false);
    if let Err(violations) = Mapping::compile(context.as_ref(), filter.as_deref()) {
        f.extend(violations);
    }
    if let Some(wf) = &workflow_id {
        match state.store.get_workflow(wf, None).await {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => {
                f.refuse("workflow_id", format!("unknown workflow {wf:?}"))
            }
            Err(e) => return Err(e.into()),
        }
    }
    f.finish()?;
    let (Some(name), Some(workflow_id)) = (name, workflow_id) else {
        return Err(ApiError::bad_request("", "incomplete trigger"));
    };
    let stored = state
        .store
        .create_webhook(WebhookTrigger {
            name,
            workflow_id,
            secret,
            secret_header,
            context,
            filter,
            created_at: now(),
            created_by: caller.0,
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/triggers/{}", stored.name)))
        .json(TriggerView::from(stored)))
}

/// Every webhook trigger, by name.
#[utoipa::path(
    get,
    path = "/v1/triggers",
    tag = "triggers",
    operation_id = "list_triggers",
    responses((status = 200, description = "Every trigger", body = TriggerList))
)]
pub(super) async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state.store.list_webhooks().await?;
    Ok(HttpResponse::Ok().json(TriggerList {
        items: items.into_iter().map(TriggerView::from).collect(),
    }))
}

/// One webhook trigger.
#[utoipa::path(
    get,
    path = "/v1/triggers/{name}",
    tag = "triggers",
    operation_id = "get_trigger",
    params(("name" = String, Path, description = "Trigger name")),
    responses(
        (status = 200, description = "The trigger", body = TriggerView),
        (status = 404, description = "Unknown trigger", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn get(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let trigger = state.store.get_webhook(&name).await?;
    Ok(HttpResponse::Ok().json(TriggerView::from(trigger)))
}

/// Deletes a webhook trigger; its runs stay, and deliveries to it answer `404`.
#[utoipa::path(
    delete,
    path = "/v1/triggers/{name}",
    tag = "triggers",
    operation_id = "delete_trigger",
    params(("name" = String, Path, description = "Trigger name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown trigger", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn delete(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.store.delete_webhook(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}
