//! The HTTP API (`/v1`): one file per resource, errors mapped in [`error`].
//!
//! Handlers read as recipes: extract, call the store or the engine, shape the answer.
//! Only this module knows actix-web.

mod body;
pub mod error;
mod health;
mod logs;
mod runs;
mod templates;
mod workflows;

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use futures::future::{Ready, ready};
use serde::Deserialize;

use tokio::sync::Semaphore;

use crate::config::{RawLimits, RawRunLogs};
use crate::definition::Validator;
use crate::engine::Engine;
use crate::model::PageRequest;
use crate::store::DynStore;
use crate::templates::Pack;

pub use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub store: DynStore,
    pub engine: Engine,
    pub validator: Arc<Validator>,
    pub pack: Arc<Pack>,
    pub limits: RawLimits,
    /// Run log limits and streaming settings.
    pub logs: RawRunLogs,
    /// One permit per open SSE log stream (`logs.max_streams`).
    pub log_streams: Arc<Semaphore>,
}

/// Who is calling: the token's name when auth is on (set by the auth middleware).
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<String>);

impl Caller {
    /// The name recorded on decisions: the token name, or `anonymous`.
    pub fn name(&self) -> String {
        self.0.clone().unwrap_or_else(|| "anonymous".into())
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(req
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_default()))
    }
}

/// `limit` and `cursor` of list endpoints.
#[derive(Debug, Deserialize)]
pub struct Paging {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// Default page size.
pub const DEFAULT_PAGE: usize = 50;

impl Paging {
    fn request(&self, limits: &RawLimits) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > limits.max_page {
            return Err(ApiError::bad_request(
                "/limit",
                format!("limit must be between 1 and {}", limits.max_page),
            ));
        }
        Ok(PageRequest {
            limit,
            cursor: self.cursor.clone().filter(|c| !c.is_empty()),
        })
    }
}

/// Registers every route and the error handlers that keep all answers `problem+json`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| {
        ApiError::bad_request("", format!("invalid query string: {e}")).into()
    }))
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::bad_request("", format!("invalid path: {e}")).into()),
    )
    .configure(health::routes)
    .service(
        web::scope("/v1")
            .configure(workflows::routes)
            .configure(templates::routes)
            .configure(runs::routes)
            .configure(logs::routes),
    )
    .default_service(web::to(not_found));
}

/// A resource whose unsupported methods answer `405` as `problem+json`.
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(format!(
        "{} is not supported on {}",
        req.method(),
        req.path()
    )))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "{} {}",
        req.method(),
        req.path()
    )))
}
