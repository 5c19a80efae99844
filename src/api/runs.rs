//! `/v1/runs`: start (idempotently), list, read, and decide (approve, reject, cancel, retry).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::body::Document;
use super::{ApiError, AppState, Caller, Paging, resource};
use crate::engine::{Request, StartRun};
use crate::model::{RunFilter, RunStatus};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/runs")
            .route(web::post().to(start))
            .route(web::get().to(list)),
    )
    .service(resource("/runs/{id}").route(web::get().to(get)))
    .service(resource("/runs/{id}/approve").route(web::post().to(approve)))
    .service(resource("/runs/{id}/reject").route(web::post().to(reject)))
    .service(resource("/runs/{id}/cancel").route(web::post().to(cancel)))
    .service(resource("/runs/{id}/retry").route(web::post().to(retry)));
}

/// The longest `Idempotency-Key` accepted.
const MAX_KEY: usize = 255;

async fn start(
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
struct ListQuery {
    workflow_id: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list(
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

async fn get(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
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

async fn approve(
    state: web::Data<AppState>,
    id: web::Path<String>,
    caller: Caller,
    doc: Document,
) -> Result<HttpResponse, ApiError> {
    let body = decision_body(doc)?;
    let request = Request::Approve {
        step: body.step,
        by: caller.name(),
        comment: body.comment,
        input: body.input,
    };
    Ok(HttpResponse::Ok().json(state.engine.decide(&id, request).await?))
}

async fn reject(
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
    let request = Request::Reject {
        step: body.step,
        by: caller.name(),
        comment: body.comment,
    };
    Ok(HttpResponse::Ok().json(state.engine.decide(&id, request).await?))
}

async fn cancel(
    state: web::Data<AppState>,
    id: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let run = state
        .engine
        .decide(&id, Request::Cancel { by: caller.name() })
        .await?;
    Ok(HttpResponse::Ok().json(run))
}

async fn retry(
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
