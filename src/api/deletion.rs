//! `DELETE /v1/workflows/{id}` archives a workflow; `DELETE /v1/runs/{id}` deletes a
//! finished run. Both record the caller's token name: on the workflow (`archived_by`,
//! served with it) and in the store's record of deleted runs, which a later read of the
//! run quotes in its `404`. Both are also logged.

use actix_web::{HttpResponse, web};

use super::schemas::Problem;
use super::{ApiError, AppState, Caller};

/// Archives a workflow: it leaves lists (unless `?archived=true`) and starts no more runs;
/// it, its versions and its runs can still be read. Archiving twice changes nothing.
#[utoipa::path(
    delete,
    path = "/v1/workflows/{id}",
    tag = "workflows",
    operation_id = "archive_workflow",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 204, description = "Archived (or already archived)"),
        (status = 404, description = "Unknown workflow", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn archive_workflow(
    state: web::Data<AppState>,
    id: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let archived = state.store.archive_workflow(&id, &caller.name()).await?;
    tracing::info!(workflow_id = %id, by = %archived.by, at = %archived.at, "workflow archived");
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes a finished run with its steps, approvals, logs and hook events.
#[utoipa::path(
    delete,
    path = "/v1/runs/{id}",
    tag = "runs",
    operation_id = "delete_run",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown or already deleted run", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The run is not finished (cancel it first)", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn delete_run(
    state: web::Data<AppState>,
    id: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    match state.store.delete_run(&id, &caller.name()).await {
        Ok(deleted) => {
            tracing::info!(run_id = %id, workflow_id = %deleted.workflow_id,
                status = %deleted.status, by = %deleted.by, "run deleted");
            Ok(HttpResponse::NoContent().finish())
        }
        Err(crate::store::StoreError::NotFound(what)) => Err(not_found(&state, &id, what).await),
        Err(e) => Err(e.into()),
    }
}

/// The `404` of run `id`: says who deleted it and when, when it was deleted.
pub(super) async fn not_found(state: &AppState, id: &str, what: String) -> ApiError {
    match state.store.deleted_run(id).await {
        Ok(Some(d)) => ApiError::NotFound(format!(
            "run {id} (it was deleted by {} at {}; it had ended {})",
            d.by,
            d.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            d.status
        )),
        _ => ApiError::NotFound(what),
    }
}
