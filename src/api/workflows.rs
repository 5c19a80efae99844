//! `/v1/workflows`: create (directly or from a template), list, read, replace, versions,
//! rollback and offline validation. Versions are append-only.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::Document;
use super::schemas::{NewWorkflow, Problem, Rollback, Valid, Workflow, WorkflowList};
use super::{ApiError, AppState, Caller, Paging};
use crate::definition::{as_object, stored_definition};
use crate::model::WorkflowVersion;
use crate::store::NewWorkflowVersion;
use crate::templates;

/// The served shape of a workflow version: `id`, the definition's fields, then metadata.
pub fn view(v: &WorkflowVersion) -> Value {
    let mut map = Map::new();
    map.insert("id".into(), json!(v.id));
    if let Value::Object(def) = &v.definition {
        map.extend(def.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    map.insert("version".into(), json!(v.version));
    map.insert("created_at".into(), json!(v.created_at));
    if let Some(by) = &v.created_by {
        map.insert("created_by".into(), json!(by));
    }
    if let Some(from) = v.restored_from {
        map.insert("restored_from".into(), json!(from));
    }
    Value::Object(map)
}

fn created(v: &WorkflowVersion) -> HttpResponse {
    HttpResponse::Created()
        .insert_header(("Location", format!("/v1/workflows/{}", v.id)))
        .json(view(v))
}

/// Creates a workflow (version 1), from a definition or from a template.
#[utoipa::path(
    post,
    path = "/v1/workflows",
    tag = "workflows",
    operation_id = "create_workflow",
    request_body(content(
        (NewWorkflow = "application/json"),
        (NewWorkflow = "application/yaml")
    )),
    responses(
        (status = 201, description = "Created, version 1", body = Workflow),
        (status = 400, description = "Invalid definition or parameters", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Unknown template", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The id exists", body = Problem,
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
    as_object(&doc)?;
    let (doc, name) = if doc.get("template").is_some() {
        instantiate(&state, &doc).await?
    } else {
        let wf = state.validator.validate(&doc)?;
        let own = doc.get("id").and_then(Value::as_str);
        super::children::check(&state.store, &wf, own).await?;
        (doc, wf.name)
    };
    let id = match doc.get("id") {
        Some(Value::String(id)) => id.clone(),
        _ => crate::ids::new(crate::ids::WORKFLOW),
    };
    let stored = state
        .store
        .create_workflow(NewWorkflowVersion {
            id,
            name,
            definition: stored_definition(&doc),
            created_by: caller.0,
            restored_from: None,
        })
        .await?;
    Ok(created(&stored))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FromTemplate {
    template: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default = "empty_object")]
    params: Value,
}

fn empty_object() -> Value {
    json!({})
}

/// `{"template", "name", "params"}` → a validated definition that records its origin.
async fn instantiate(state: &AppState, doc: &Value) -> Result<(Value, String), ApiError> {
    let request: FromTemplate = serde_json::from_value(doc.clone())
        .map_err(|e| ApiError::bad_request("", format!("invalid template instantiation: {e}")))?;
    let template = match state.pack.get(&request.template) {
        Some(t) => t.clone(),
        None => {
            let stored = state.store.get_template(&request.template).await?;
            templates::Template {
                name: stored.name,
                body: stored.body,
            }
        }
    };
    let (mut document, wf) = templates::instantiate(
        &template,
        request.name.as_deref(),
        &request.params,
        &state.validator,
    )?;
    if let Value::Object(map) = &mut document {
        if let Some(id) = request.id {
            map.insert("id".into(), json!(id));
        }
        map.insert(
            "x-template".into(),
            json!({"name": template.name, "params": request.params}),
        );
    }
    Ok((document, wf.name))
}

/// The latest version of every workflow, newest first.
#[utoipa::path(
    get,
    path = "/v1/workflows",
    tag = "workflows",
    operation_id = "list_workflows",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size (default 50, at most limits.max_page)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")
    ),
    responses(
        (status = 200, description = "A page of workflows", body = WorkflowList),
        (status = 400, description = "Bad paging", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn list(
    state: web::Data<AppState>,
    paging: web::Query<Paging>,
) -> Result<HttpResponse, ApiError> {
    let page = state
        .store
        .list_workflows(&paging.request(&state.limits)?)
        .await?;
    let items: Vec<Value> = page.items.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_cursor": page.next_cursor})))
}

#[derive(Deserialize)]
pub(super) struct VersionQuery {
    version: Option<u32>,
}

/// A workflow: its latest version, or `?version=N`.
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}",
    tag = "workflows",
    operation_id = "get_workflow",
    params(
        ("id" = String, Path, description = "Workflow id"),
        ("version" = Option<u32>, Query, description = "A version; the latest when absent")
    ),
    responses(
        (status = 200, description = "The workflow version", body = Workflow),
        (status = 404, description = "Unknown workflow or version", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<VersionQuery>,
) -> Result<HttpResponse, ApiError> {
    let v = state.store.get_workflow(&id, q.version).await?;
    Ok(HttpResponse::Ok().json(view(&v)))
}

/// Replaces the definition: a new version.
#[utoipa::path(
    put,
    path = "/v1/workflows/{id}",
    tag = "workflows",
    operation_id = "replace_workflow",
    params(("id" = String, Path, description = "Workflow id")),
    request_body(content(
        (Workflow = "application/json"),
        (Workflow = "application/yaml")
    )),
    responses(
        (status = 200, description = "The new version", body = Workflow),
        (status = 400, description = "Invalid definition", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Unknown workflow", body = Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn replace(
    state: web::Data<AppState>,
    id: web::Path<String>,
    caller: Caller,
    Document(doc): Document,
) -> Result<HttpResponse, ApiError> {
    as_object(&doc)?;
    if let Some(body_id) = doc.get("id")
        && body_id.as_str() != Some(id.as_str())
    {
        return Err(ApiError::bad_request(
            "/id",
            format!("the body's id {body_id} differs from the path's {:?}", *id),
        ));
    }
    let wf = state.validator.validate(&doc)?;
    super::children::check(&state.store, &wf, Some(id.as_str())).await?;
    let stored = state
        .store
        .add_workflow_version(NewWorkflowVersion {
            id: id.into_inner(),
            name: wf.name,
            definition: stored_definition(&doc),
            created_by: caller.0,
            restored_from: None,
        })
        .await?;
    Ok(HttpResponse::Ok().json(view(&stored)))
}

/// Every version of a workflow, newest first.
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/versions",
    tag = "workflows",
    operation_id = "list_workflow_versions",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "Every version", body = WorkflowList),
        (status = 404, description = "Unknown workflow", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn versions(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let versions = state.store.list_workflow_versions(&id).await?;
    let items: Vec<Value> = versions.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_cursor": null})))
}

/// A new version whose definition is version N's.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/rollback",
    tag = "workflows",
    operation_id = "rollback_workflow",
    params(("id" = String, Path, description = "Workflow id")),
    request_body = Rollback,
    responses(
        (status = 201, description = "The new version", body = Workflow),
        (status = 400, description = "Bad version", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Unknown workflow or version", body = Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn rollback(
    state: web::Data<AppState>,
    id: web::Path<String>,
    caller: Caller,
    Document(doc): Document,
) -> Result<HttpResponse, ApiError> {
    let version = match doc.get("version") {
        Some(v) => v.as_u64().filter(|&n| (1..=u32::MAX as u64).contains(&n)),
        None => return Err(ApiError::bad_request("/version", "version is required")),
    }
    .ok_or_else(|| ApiError::bad_request("/version", "version must be a positive integer"))?
        as u32;
    let old = state.store.get_workflow(&id, Some(version)).await?;
    let wf = state.validator.validate(&old.definition)?;
    let stored = state
        .store
        .add_workflow_version(NewWorkflowVersion {
            id: id.into_inner(),
            name: wf.name,
            definition: old.definition,
            created_by: caller.0,
            restored_from: Some(version),
        })
        .await?;
    Ok(created(&stored))
}

/// Validates a definition without storing it (a reader may call it).
#[utoipa::path(
    post,
    path = "/v1/workflows/validate",
    tag = "workflows",
    operation_id = "validate_workflow",
    request_body(content(
        (Workflow = "application/json"),
        (Workflow = "application/yaml")
    )),
    responses(
        (status = 200, description = "The definition is valid", body = Valid),
        (status = 400, description = "Every violation, with its JSON pointer", body = Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn validate(
    state: web::Data<AppState>,
    Document(doc): Document,
) -> Result<HttpResponse, ApiError> {
    as_object(&doc)?;
    state.validator.validate(&doc)?;
    Ok(HttpResponse::Ok().json(json!({"valid": true})))
}
