//! `/v1/schedules`: cron schedules that start runs of a workflow (DESIGN §10): create,
//! list, read, replace, delete, pause, resume, and trigger a run now.
//!
//! A schedule is checked whole when it is written (cron, time zone, workflow, context
//! size) and stored with its `next_fire_at`; the schedule loop (`crate::triggers`) fires
//! it from there. Pausing clears `next_fire_at`; resuming sets it to the first tick from
//! now, so ticks that fell while paused do not fire.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::body::Document;
use super::fields::Fields;
use super::schemas::Problem;
use super::{ApiError, AppState, Caller};
use crate::model::{Run, Timestamp, now};
use crate::size::json_len;
use crate::store::{Overlap, Schedule, ScheduleUpdate, StoreError};
use crate::triggers::scheduler::run_of;
use crate::triggers::{CronError, CronSchedule};

/// A schedule as served.
#[derive(Serialize, ToSchema)]
pub struct ScheduleView {
    id: String,
    workflow_id: String,
    /// Five fields, six with seconds first, or `@hourly`-style names.
    cron: String,
    /// An IANA time zone name.
    timezone: String,
    /// The context of every run it starts.
    #[schema(value_type = Object)]
    context: Map<String, Value>,
    overlap: Overlap,
    paused: bool,
    /// The next tick; `null` while paused.
    #[schema(value_type = Option<String>, format = DateTime)]
    next_fire_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    last_fire_time: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_run_id: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
}

impl From<Schedule> for ScheduleView {
    fn from(s: Schedule) -> Self {
        Self {
            id: s.id,
            workflow_id: s.workflow_id,
            cron: s.cron,
            timezone: s.timezone,
            context: s.context,
            overlap: s.overlap,
            paused: s.paused,
            next_fire_at: s.next_fire_at,
            last_fire_time: s.last_fire_time,
            last_run_id: s.last_run_id,
            created_at: s.created_at,
            updated_at: s.updated_at,
            created_by: s.created_by,
        }
    }
}

/// Every schedule.
#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    items: Vec<ScheduleView>,
}

/// `POST /v1/schedules` and `PUT /v1/schedules/{id}`.
#[derive(ToSchema)]
#[allow(dead_code)] // described, never built
pub struct ScheduleBody {
    /// Given or generated (`sch_<ULID>`); letters, digits, `.`, `_`, `-`.
    id: Option<String>,
    workflow_id: String,
    cron: String,
    /// Default `UTC`.
    timezone: Option<String>,
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// Default `skip`.
    overlap: Option<Overlap>,
    /// Default false.
    paused: Option<bool>,
}

/// A checked schedule body.
struct Spec {
    id: Option<String>,
    workflow_id: String,
    cron: String,
    timezone: String,
    context: Map<String, Value>,
    overlap: Overlap,
    paused: bool,
    /// The first tick from now, unless paused.
    next_fire_at: Option<Timestamp>,
}

/// Reads and checks a schedule body: every problem is reported with its pointer.
async fn spec(state: &AppState, doc: Document) -> Result<Spec, ApiError> {
    let mut f = Fields::of(doc)?;
    let id = f.name("id", false);
    let workflow_id = f.string("workflow_id", true);
    let cron = f.string("cron", true);
    let timezone = f.string("timezone", false).unwrap_or_else(|| "UTC".into());
    let context = f.object("context").unwrap_or_default();
    let overlap = match f.string("overlap", false).map(|o| o.parse::<Overlap>()) {
        None => Overlap::default(),
        Some(Ok(o)) => o,
        Some(Err(e)) => {
            f.refuse("overlap", e.to_string());
            Overlap::default()
        }
    };
    let paused = f.boolean("paused").unwrap_or(false);
    let max = state.limits.max_context_bytes;
    if json_len(&context) > max {
        f.refuse(
            "context",
            format!("context is over limits.max_context_bytes ({max})"),
        );
    }
    let mut schedule = None;
    if let Some(cron) = &cron {
        // An expression that never fires is only known after a search of many years of
        // ticks (a few hundred milliseconds): off the request's worker thread.
        let (text, zone) = (cron.clone(), timezone.clone());
        let parsed = web::block(move || CronSchedule::parse(&text, &zone))
            .await
            .map_err(|_| ApiError::Busy("the server is stopping".into()))?;
        match parsed {
            Ok(s) => schedule = Some(s),
            Err(e @ CronError::TimeZone(_)) => f.refuse("timezone", e.to_string()),
            Err(e) => f.refuse("cron", e.to_string()),
        }
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
    let (Some(workflow_id), Some(cron), Some(schedule)) = (workflow_id, cron, schedule) else {
        return Err(ApiError::bad_request("", "incomplete schedule"));
    };
    Ok(Spec {
        id,
        workflow_id,
        cron,
        timezone,
        context,
        overlap,
        paused,
        next_fire_at: if paused {
            None
        } else {
            schedule.next_after(now())
        },
    })
}

/// Creates a schedule.
#[utoipa::path(
    post,
    path = "/v1/schedules",
    tag = "schedules",
    operation_id = "create_schedule",
    request_body = ScheduleBody,
    responses(
        (status = 201, description = "Created, with its next_fire_at", body = ScheduleView),
        (status = 400, description = "Invalid cron, unknown time zone or workflow, bad context",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id is taken", body = Problem,
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
    let spec = spec(&state, doc).await?;
    let at = now();
    let schedule = Schedule {
        id: spec
            .id
            .unwrap_or_else(|| crate::ids::new(crate::ids::SCHEDULE)),
        workflow_id: spec.workflow_id,
        cron: spec.cron,
        timezone: spec.timezone,
        context: spec.context,
        overlap: spec.overlap,
        paused: spec.paused,
        next_fire_at: spec.next_fire_at,
        last_fire_time: None,
        last_run_id: None,
        created_at: at,
        updated_at: at,
        created_by: caller.0,
    };
    let stored = state.store.create_schedule(schedule).await?;
    state.scheduler.wake();
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/schedules/{}", stored.id)))
        .json(ScheduleView::from(stored)))
}

/// Every schedule, by id.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = "schedules",
    operation_id = "list_schedules",
    responses((status = 200, description = "Every schedule", body = ScheduleList))
)]
pub(super) async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state.store.list_schedules().await?;
    Ok(HttpResponse::Ok().json(ScheduleList {
        items: items.into_iter().map(ScheduleView::from).collect(),
    }))
}

/// One schedule.
#[utoipa::path(
    get,
    path = "/v1/schedules/{id}",
    tag = "schedules",
    operation_id = "get_schedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 404, description = "Unknown schedule", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let schedule = state.store.get_schedule(&id).await?;
    Ok(HttpResponse::Ok().json(ScheduleView::from(schedule)))
}

/// Replaces a schedule's definition; its next tick is counted from now.
#[utoipa::path(
    put,
    path = "/v1/schedules/{id}",
    tag = "schedules",
    operation_id = "replace_schedule",
    params(("id" = String, Path, description = "Schedule id")),
    request_body = ScheduleBody,
    responses(
        (status = 200, description = "Replaced", body = ScheduleView),
        (status = 400, description = "Invalid cron, unknown time zone or workflow, bad context",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown schedule", body = Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "Body over limits.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn replace(
    state: web::Data<AppState>,
    id: web::Path<String>,
    doc: Document,
) -> Result<HttpResponse, ApiError> {
    let spec = spec(&state, doc).await?;
    if spec.id.as_ref().is_some_and(|body| body != id.as_str()) {
        return Err(ApiError::bad_request(
            "/id",
            format!("the body's id differs from the path's {:?}", *id),
        ));
    }
    let stored = state
        .store
        .update_schedule(ScheduleUpdate {
            id: id.into_inner(),
            workflow_id: spec.workflow_id,
            cron: spec.cron,
            timezone: spec.timezone,
            context: spec.context,
            overlap: spec.overlap,
            paused: spec.paused,
            next_fire_at: spec.next_fire_at,
        })
        .await?;
    state.scheduler.wake();
    Ok(HttpResponse::Ok().json(ScheduleView::from(stored)))
}

/// Deletes a schedule; its runs stay.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{id}",
    tag = "schedules",
    operation_id = "delete_schedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown schedule", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn delete(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.store.delete_schedule(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Sets `paused` (clearing or recomputing `next_fire_at`).
async fn set_paused(state: &AppState, id: &str, paused: bool) -> Result<HttpResponse, ApiError> {
    let s = state.store.get_schedule(id).await?;
    let next_fire_at = if paused {
        None
    } else {
        CronSchedule::parse(&s.cron, &s.timezone)
            .map_err(|e| ApiError::Conflict(format!("schedule {id} cannot fire: {e}")))?
            .next_after(now())
    };
    let stored = state
        .store
        .update_schedule(ScheduleUpdate {
            id: s.id,
            workflow_id: s.workflow_id,
            cron: s.cron,
            timezone: s.timezone,
            context: s.context,
            overlap: s.overlap,
            paused,
            next_fire_at,
        })
        .await?;
    state.scheduler.wake();
    Ok(HttpResponse::Ok().json(ScheduleView::from(stored)))
}

/// Pauses a schedule: no tick fires until it is resumed.
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/pause",
    tag = "schedules",
    operation_id = "pause_schedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses(
        (status = 200, description = "Paused", body = ScheduleView),
        (status = 404, description = "Unknown schedule", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn pause(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(&state, &id, true).await
}

/// Resumes a schedule from its next tick after now (ticks missed while paused do not fire).
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/resume",
    tag = "schedules",
    operation_id = "resume_schedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses(
        (status = 200, description = "Resumed", body = ScheduleView),
        (status = 404, description = "Unknown schedule", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn resume(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(&state, &id, false).await
}

/// Starts a run of the schedule now, whatever its overlap policy and even while paused;
/// its ticks are unchanged.
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/trigger",
    tag = "schedules",
    operation_id = "trigger_schedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses(
        (status = 200, description = "The run it started", body = Run),
        (status = 404, description = "Unknown schedule or workflow", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn trigger(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let s = state.store.get_schedule(&id).await?;
    let (run, _) = state.engine.start_run(run_of(&s, now(), None)).await?;
    state.metrics.schedule_fires("fired", 1);
    Ok(HttpResponse::Ok()
        .insert_header(("Location", format!("/v1/runs/{}", run.id)))
        .json(run))
}
