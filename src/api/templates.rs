//! `/v1/templates`: the pack loaded at start plus templates stored through the API.

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::body::Document;
use super::schemas::{Problem, Template, TemplateList};
use super::{ApiError, AppState, Caller};
use crate::model::{TemplateRecord, now};
use crate::templates;

fn view(body: &Value, source: &str) -> Value {
    let mut v = body.clone();
    if let Value::Object(map) = &mut v {
        map.insert("source".into(), json!(source));
    }
    v
}

/// The pack's templates, then the stored ones.
#[utoipa::path(
    get,
    path = "/v1/templates",
    tag = "templates",
    operation_id = "list_templates",
    responses((status = 200, description = "Every template", body = TemplateList))
)]
pub(super) async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut items: Vec<Value> = state.pack.iter().map(|t| view(&t.body, "pack")).collect();
    items.extend(
        state
            .store
            .list_templates()
            .await?
            .iter()
            .map(|t| view(&t.body, "stored")),
    );
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_cursor": null})))
}

/// One template.
#[utoipa::path(
    get,
    path = "/v1/templates/{name}",
    tag = "templates",
    operation_id = "get_template",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 200, description = "The template", body = Template),
        (status = 404, description = "Unknown template", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn get(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if let Some(t) = state.pack.get(&name) {
        return Ok(HttpResponse::Ok().json(view(&t.body, "pack")));
    }
    let t = state.store.get_template(&name).await?;
    Ok(HttpResponse::Ok().json(view(&t.body, "stored")))
}

/// Stores a template (checked like a workflow, with its parameters).
#[utoipa::path(
    post,
    path = "/v1/templates",
    tag = "templates",
    operation_id = "create_template",
    request_body(content(
        (Template = "application/json"),
        (Template = "application/yaml")
    )),
    responses(
        (status = 201, description = "Stored", body = Template),
        (status = 400, description = "Invalid template", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The name exists", body = Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    Document(doc): Document,
) -> Result<HttpResponse, ApiError> {
    let template = templates::check(&doc, &state.validator)?;
    if state.pack.get(&template.name).is_some() {
        return Err(ApiError::Conflict(format!(
            "template {} already exists in the pack",
            template.name
        )));
    }
    let stored = state
        .store
        .create_template(TemplateRecord {
            name: template.name,
            body: template.body,
            created_at: now(),
            created_by: caller.0,
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/templates/{}", stored.name)))
        .json(view(&stored.body, "stored")))
}
