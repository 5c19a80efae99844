//! `/v1/workflows`: create (directly or from a template), list, read, replace, versions,
//! rollback and offline validation. Versions are append-only.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::Document;
use super::{ApiError, AppState, Caller, Paging, resource};
use crate::definition::{as_object, stored_definition};
use crate::model::WorkflowVersion;
use crate::store::NewWorkflowVersion;
use crate::templates;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/workflows")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(resource("/workflows/validate").route(web::post().to(validate)))
    .service(
        resource("/workflows/{id}")
            .route(web::get().to(get))
            .route(web::put().to(replace)),
    )
    .service(resource("/workflows/{id}/versions").route(web::get().to(versions)))
    .service(resource("/workflows/{id}/rollback").route(web::post().to(rollback)));
}

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

async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    Document(doc): Document,
) -> Result<HttpResponse, ApiError> {
    as_object(&doc)?;
    let (doc, name) = if doc.get("template").is_some() {
        instantiate(&state, &doc).await?
    } else {
        let wf = state.validator.validate(&doc)?;
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

async fn list(
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
struct VersionQuery {
    version: Option<u32>,
}

async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<VersionQuery>,
) -> Result<HttpResponse, ApiError> {
    let v = state.store.get_workflow(&id, q.version).await?;
    Ok(HttpResponse::Ok().json(view(&v)))
}

async fn replace(
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

async fn versions(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let versions = state.store.list_workflow_versions(&id).await?;
    let items: Vec<Value> = versions.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_cursor": null})))
}

async fn rollback(
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

async fn validate(
    state: web::Data<AppState>,
    Document(doc): Document,
) -> Result<HttpResponse, ApiError> {
    as_object(&doc)?;
    state.validator.validate(&doc)?;
    Ok(HttpResponse::Ok().json(json!({"valid": true})))
}
