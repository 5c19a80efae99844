//! `GET /v1/queues` and `GET /v1/workers` (DESIGN §8): what waits on each task queue and
//! who polls it.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::tasks::items;
use super::{ApiError, AppState};
use crate::model::{Timestamp, now};

/// A task queue.
#[derive(Serialize, ToSchema)]
pub struct Queue {
    queue: String,
    /// Tasks waiting for a worker (retries whose delay runs included).
    waiting: u64,
    /// Tasks claimed by a worker now.
    in_flight: u64,
    /// How long the oldest waiting task has waited (none when nothing waits).
    oldest_waiting_ms: Option<u64>,
    /// Workers seen polling it in the last five minutes.
    workers: Vec<String>,
}

/// Every queue in use.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct QueueList {
    items: Vec<Queue>,
}

/// A worker seen polling.
#[derive(Serialize, ToSchema)]
pub struct Worker {
    name: String,
    queues: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    last_seen: Timestamp,
    /// Tasks it holds claimed now.
    in_flight: u64,
}

/// Workers seen in the last five minutes.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WorkerList {
    items: Vec<Worker>,
}

/// Task queues: waiting and in-flight tasks, and the workers polling each.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "tasks",
    operation_id = "list_queues",
    responses((status = 200, description = "Every queue in use, by name", body = QueueList))
)]
pub(super) async fn list_queues(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let at = now();
    let queues: Vec<Queue> = state
        .engine
        .list_queues()
        .await?
        .into_iter()
        .map(|q| Queue {
            oldest_waiting_ms: q
                .oldest_waiting_at
                .map(|t| (at - t).num_milliseconds().max(0) as u64),
            queue: q.queue,
            waiting: q.waiting,
            in_flight: q.in_flight,
            workers: q.workers,
        })
        .collect();
    Ok(items(queues))
}

/// Workers seen polling in the last five minutes.
#[utoipa::path(
    get,
    path = "/v1/workers",
    tag = "tasks",
    operation_id = "list_workers",
    responses((status = 200, description = "Workers by name", body = WorkerList))
)]
pub(super) async fn list_workers(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let workers: Vec<Worker> = state
        .engine
        .list_workers()
        .await?
        .into_iter()
        .map(|w| Worker {
            name: w.name,
            queues: w.queues,
            last_seen: w.last_seen,
            in_flight: w.in_flight,
        })
        .collect();
    Ok(items(workers))
}
