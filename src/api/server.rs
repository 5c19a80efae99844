//! `GET /v1/server`: this server as operators and the console need to see it — its
//! `server.id`, whether it is ready (and why not), its lease and its retention, with what
//! retention deleted since start, and which hook targets this replica delivers.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use super::error::unavailable_detail;
use super::schemas::ServerStatus;
use crate::config::RetentionSettings;

/// What `GET /v1/server` says about this server besides its readiness.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `server.id`: the holder of this server's leases.
    pub id: String,
    /// `sqlite` or `postgres`.
    pub store: &'static str,
    pub lease_ttl: Duration,
    pub retention: RetentionSettings,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// This server: its id, readiness and data lifecycle.
#[utoipa::path(
    get,
    path = "/v1/server",
    tag = "operations",
    operation_id = "server",
    responses((status = 200, description = "This server; `ready` is false (with `reason`) \
        while the store does not answer or refuses writes", body = ServerStatus))
)]
pub(super) async fn server(state: web::Data<AppState>) -> HttpResponse {
    let info = &state.server;
    let readiness = match state.store.ping().await {
        Ok(()) => state.store.writable().await,
        Err(e) => Err(e),
    };
    let mut body = json!({
        "id": info.id,
        "version": env!("CARGO_PKG_VERSION"),
        "store": info.store,
        "ready": readiness.is_ok(),
        "lease_ttl_ms": ms(info.lease_ttl),
        "retention": {
            "runs_ms": info.retention.runs.map(ms),
            "hook_events_ms": info.retention.hook_events.map(ms),
            "interval_ms": ms(info.retention.interval),
            "deleted": {
                "runs": state.metrics.retention_deleted_count("runs"),
                "hook_events": state.metrics.retention_deleted_count("hook_events"),
            },
        },
    });
    let hooks: Vec<Value> = state
        .hooks
        .counts()
        .into_iter()
        .map(|c| {
            json!({"target": c.target, "delivering": c.delivering,
                   "delivered": c.delivered, "cursor": c.cursor})
        })
        .collect();
    if let Value::Object(map) = &mut body {
        map.insert("hooks".into(), Value::Array(hooks));
    }
    if let (Err(e), Value::Object(map)) = (readiness, &mut body) {
        map.insert("reason".into(), Value::String(unavailable_detail(&e)));
    }
    HttpResponse::Ok().json(body)
}
