//! `GET /health` (the process answers) and `GET /ready` (the store answers and takes
//! writes: after a write failed, a probe write decides, so readiness recovers by itself).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::schemas::{self, Status};
use super::{ApiError, AppState};

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    operation_id = "health",
    responses((status = 200, description = "The server is up", body = Status))
)]
pub(super) async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: the store answers and takes writes.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    operation_id = "ready",
    responses(
        (status = 200, description = "The store answers and takes writes", body = Status),
        (status = 503, description = "The store does not answer or refuses writes (disk full, \
            read-only); `detail` says why", body = schemas::Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.store.ping().await?;
    state.store.writable().await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}
