//! `/v1/templates`: the pack loaded at start plus templates stored through the API.

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::body::Document;
use super::{ApiError, AppState, Caller, resource};
use crate::model::{TemplateRecord, now};
use crate::templates;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/templates")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(resource("/templates/{name}").route(web::get().to(get)));
}

fn view(body: &Value, source: &str) -> Value {
    let mut v = body.clone();
    if let Value::Object(map) = &mut v {
        map.insert("source".into(), json!(source));
    }
    v
}

async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
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

async fn get(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if let Some(t) = state.pack.get(&name) {
        return Ok(HttpResponse::Ok().json(view(&t.body, "pack")));
    }
    let t = state.store.get_template(&name).await?;
    Ok(HttpResponse::Ok().json(view(&t.body, "stored")))
}

async fn create(
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
