//! `GET /metrics`: every metric in the Prometheus text format. The gauges that describe a
//! state (active and parked runs, open streams, hook outbox depth) are read now; a store
//! that does not answer leaves its gauges at their last value rather than failing the scrape.

use actix_web::{HttpResponse, web};

use super::AppState;
use crate::metrics::{CONTENT_TYPE, Gauges};
use crate::model::RunStatus;

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format (version 0.0.4)",
        body = String, content_type = "text/plain"))
)]
pub(super) async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    let gauges = Gauges {
        runs_active: state.engine.active_runs(),
        runs_parked: state
            .store
            .count_runs(RunStatus::WaitingApproval)
            .await
            .ok(),
        runs_waiting: state.store.count_runs(RunStatus::Waiting).await.ok(),
        sse_subscribers: state
            .logs
            .max_streams
            .saturating_sub(state.log_streams.available_permits()),
        hook_outbox_depth: outbox_depth(&state).await,
        hook_deliveries: state
            .hooks
            .counts()
            .into_iter()
            .flat_map(|c| {
                [
                    (c.target, "delivered", c.delivered),
                    (c.target, "failed", c.failures),
                    (c.target, "dropped", c.dropped),
                ]
            })
            .collect(),
        queue_waiting: state
            .engine
            .list_queues()
            .await
            .ok()
            .map(|queues| queues.into_iter().map(|q| (q.queue, q.waiting)).collect()),
        store_writes: state.store.write_stats(),
    };
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(state.metrics.render(&gauges))
}

/// Events after each target's acknowledged cursor.
async fn outbox_depth(state: &AppState) -> Vec<(&'static str, u64)> {
    if state.hook_targets.is_empty() {
        return Vec::new();
    }
    let Ok(head) = state.store.outbox_head().await else {
        return Vec::new();
    };
    let mut depths = Vec::with_capacity(state.hook_targets.len());
    for target in &state.hook_targets {
        if let Ok(cursor) = state.store.event_cursor(target).await {
            depths.push((*target, head.saturating_sub(cursor)));
        }
    }
    depths
}
