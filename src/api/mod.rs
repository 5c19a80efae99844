//! The HTTP API (`/v1`): one file per resource, errors mapped in [`error`].
//!
//! Handlers read as recipes: extract, call the store or the engine, shape the answer.
//! Only this module knows actix-web.
//!
//! Every route is declared once, in the `routes!` table below, with the access it needs;
//! the table registers the routes, lists them as [`ROUTES`] (which authorization and the
//! tests read), and names the handlers whose `#[utoipa::path]` annotations make up the
//! OpenAPI document, so the three cannot drift apart.

pub mod auth;
mod body;
mod children;
pub mod console;
pub mod cors;
mod deletion;
pub mod error;
mod events;
mod fields;
mod health;
mod logs;
mod metrics;
pub mod observe;
pub mod openapi;
pub mod params;
mod queues;
mod rerun;
mod run_events;
mod run_search;
mod run_summary;
mod runs;
mod schedules;
mod schemas;
mod server;
mod sse_batch;
mod tasks;
mod templates;
mod triggers;
mod webhooks;
mod whoami;
mod workflows;

use std::sync::Arc;

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use futures::future::{Ready, ready};
use serde::Deserialize;

use tokio::sync::Semaphore;

use crate::config::{ApiToken, Role, RunLogSettings, ServerLimits, TriggerSettings};
use crate::definition::Validator;
use crate::engine::Engine;
use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::model::PageRequest;
use crate::store::DynStore;
use crate::templates::Pack;
use crate::triggers::Scheduler;

pub use error::ApiError;
pub use server::ServerInfo;

/// What every handler can reach.
pub struct AppState {
    pub store: DynStore,
    pub engine: Engine,
    pub validator: Arc<Validator>,
    pub pack: Arc<Pack>,
    pub limits: ServerLimits,
    /// Run log limits and streaming settings.
    pub logs: RunLogSettings,
    /// One permit per open SSE log stream (`logs.max_streams`).
    pub log_streams: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    /// API tokens; empty: the API is open.
    pub auth: Arc<[ApiToken]>,
    /// The hook targets delivering from the outbox (for the outbox depth metric).
    pub hook_targets: Vec<&'static str>,
    /// Hook delivery, for its counts on `/metrics`.
    pub hooks: crate::hooks::Hooks,
    /// Origins whose pages may call the API from a browser (`server.cors.allowed_origins`).
    pub cors_origins: Arc<[String]>,
    /// The schedule loop, woken when a schedule changes here.
    pub scheduler: Scheduler,
    /// The events feed's live readers.
    pub feed: Feed,
    pub triggers: TriggerSettings,
    /// This server's id, lease and retention (`GET /v1/server`).
    pub server: ServerInfo,
}

/// Who may call a route when `auth.tokens` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (`/health`, `/ready`).
    Open,
    /// A `reader` or `admin` token.
    Read,
    /// An `admin` token: changes workflows or templates, or acts on runs.
    Write,
    /// A webhook delivery, decided per trigger by the handler (see [`auth::admit_delivery`]):
    /// a valid signature for a trigger with a secret, else an admin token.
    Signed,
    /// A `worker` or `admin` token: the worker API (`/v1/tasks/*`).
    Work,
    /// Any valid token, `worker` included: who am I, queues and workers.
    Any,
}

/// One served route: method (lower case), path pattern, the access it needs, and whether
/// the OpenAPI document describes it (the console's pages and assets are not API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub documented: bool,
}

/// The access of the route `method` + `pattern`; `None` when no route matches (the answer
/// will be 404 or 405).
pub fn access_of(method: &str, pattern: Option<&str>) -> Option<Access> {
    let pattern = pattern?;
    ROUTES
        .iter()
        .find(|r| r.path == pattern && r.method.eq_ignore_ascii_case(method))
        .map(|r| r.access)
}

/// The route pattern a request matches, kept in its extensions: each middleware needs it,
/// and finding it is a walk over the routes' regular expressions.
#[derive(Clone, Copy)]
struct Matched(Option<&'static str>);

/// The pattern of the route `req` is dispatched to (`/v1/runs/{id}`), `None` when none;
/// found once per request.
///
/// Before routing, actix's `match_pattern` matches the path as received, while the router
/// matches it with percent-escapes of plain characters decoded: `/v1/runs/x/c%61ncel`
/// matched no pattern there and was still dispatched to `cancel`, so the token check let
/// any role through. This matches the path the router matches.
pub fn route_of(req: &ServiceRequest) -> Option<&'static str> {
    if let Some(matched) = req.extensions().get::<Matched>() {
        return matched.0;
    }
    let matched = pattern_of(req.match_info().as_str());
    req.extensions_mut().insert(Matched(matched));
    matched
}

/// Most segments a route pattern has, and one more: a path with more matches no route.
const MOST_SEGMENTS: usize = 8;

/// A route's pattern and its segments; `None` stands for a `{param}` segment.
type Pattern = (&'static str, Vec<Option<&'static str>>);

/// The route patterns in registration (matching) order, each once, split at `/`.
static PATTERNS: std::sync::LazyLock<Vec<Pattern>> = std::sync::LazyLock::new(|| {
    let mut patterns: Vec<Pattern> = Vec::new();
    for route in ROUTES {
        if patterns.iter().all(|(path, _)| *path != route.path) {
            let segments = route.path.split('/');
            let segments = segments.map(|s| (!s.starts_with('{')).then_some(s));
            let segments: Vec<_> = segments.collect();
            assert!(segments.len() < MOST_SEGMENTS, "{}", route.path);
            patterns.push((route.path, segments));
        }
    }
    patterns
});

/// The pattern of [`ROUTES`] the router dispatches `path` to: the first, in registration
/// order, whose literal segments are the path's and whose `{param}` segments match one
/// segment that is not empty (actix's `[^/]+`). Matched by hand rather than by the
/// resource map's regular expressions (~8k instructions a request); a test holds the two
/// to the same answers.
fn pattern_of(path: &str) -> Option<&'static str> {
    let mut parts = [""; MOST_SEGMENTS];
    let mut n = 0;
    for part in path.split('/') {
        if n == MOST_SEGMENTS {
            return None;
        }
        parts[n] = part;
        n += 1;
    }
    let parts = &parts[..n];
    PATTERNS
        .iter()
        .find(|(_, segments)| {
            segments.len() == n
                && segments
                    .iter()
                    .zip(parts)
                    .all(|(segment, part)| match segment {
                        None => !part.is_empty(),
                        Some(literal) => literal == part,
                    })
        })
        .map(|(path, _)| *path)
}

/// `api { path => [method access handler, …], … } console { … }`, each block in matching
/// order (literal segments before `{params}` on the same prefix). Both blocks are served
/// and checked alike; only the `api` block's handlers make up the OpenAPI document.
macro_rules! routes {
    (
        api { $($path:literal => [$($method:ident $access:ident $($handler:ident)::+),+ $(,)?]),+ $(,)? }
        console { $($cpath:literal => [$($cmethod:ident $caccess:ident $($chandler:ident)::+),+ $(,)?]),+ $(,)? }
    ) => {
        /// Every route the server serves, in registration order.
        pub const ROUTES: &[Route] = &[
            $($(Route { method: stringify!($method), path: $path, access: Access::$access, documented: true }),+),+,
            $($(Route { method: stringify!($cmethod), path: $cpath, access: Access::$caccess, documented: false }),+),+
        ];

        fn register(cfg: &mut web::ServiceConfig) {
            let resources = vec![
                $(($path, resource(scoped($path).1)$(.route(web::$method().to($($handler)::+)))+),)+
                $(($cpath, resource(scoped($cpath).1)$(.route(web::$cmethod().to($($chandler)::+)))+),)+
            ];
            serve_scoped(cfg, resources);
        }

        /// The operations of the OpenAPI document: the handlers of the `api` block.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($($($handler)::+),+),+))]
        struct Operations;
    };
}

routes! {
    api {
        "/health" => [get Open health::health],
        "/ready" => [get Open health::ready],
        "/metrics" => [get Read metrics::scrape],
        "/v1/openapi.json" => [get Read openapi::serve],
        "/v1/whoami" => [get Any whoami::whoami],
        "/v1/server" => [get Read server::server],
        "/v1/workflows" => [post Write workflows::create, get Read workflows::list],
        "/v1/workflows/validate" => [post Read workflows::validate],
        "/v1/workflows/{id}" => [get Read workflows::get, put Write workflows::replace, delete Write deletion::archive_workflow],
        "/v1/workflows/{id}/versions" => [get Read workflows::versions],
        "/v1/workflows/{id}/rollback" => [post Write workflows::rollback],
        "/v1/templates" => [get Read templates::list, post Write templates::create],
        "/v1/templates/{name}" => [get Read templates::get],
        "/v1/runs" => [post Write runs::start, get Read run_search::list],
        "/v1/runs/counts" => [get Read run_search::counts],
        "/v1/runs/{id}" => [get Read runs::get, delete Write deletion::delete_run],
        "/v1/runs/{id}/approve" => [post Write runs::approve],
        "/v1/runs/{id}/reject" => [post Write runs::reject],
        "/v1/runs/{id}/cancel" => [post Write runs::cancel],
        "/v1/runs/{id}/retry" => [post Write rerun::retry],
        "/v1/runs/{id}/events/{name}" => [post Write run_events::send],
        "/v1/runs/{id}/logs" => [get Read logs::read, post Write logs::append],
        "/v1/runs/{id}/logs/stream" => [get Read logs::stream],
        "/v1/schedules" => [post Write schedules::create, get Read schedules::list],
        "/v1/schedules/{id}" => [get Read schedules::get, put Write schedules::replace,
                                 delete Write schedules::delete],
        "/v1/schedules/{id}/pause" => [post Write schedules::pause],
        "/v1/schedules/{id}/resume" => [post Write schedules::resume],
        "/v1/schedules/{id}/trigger" => [post Write schedules::trigger],
        "/v1/triggers" => [post Write triggers::create, get Read triggers::list],
        "/v1/triggers/{name}" => [get Read triggers::get, delete Write triggers::delete],
        "/hooks/{name}" => [post Signed webhooks::deliver],
        "/v1/events" => [get Read events::list],
        "/v1/events/stream" => [get Read events::stream],
        "/v1/tasks/poll" => [post Work tasks::poll],
        "/v1/tasks/{id}/heartbeat" => [post Work tasks::heartbeat],
        "/v1/tasks/{id}/complete" => [post Work tasks::complete],
        "/v1/tasks/{id}/fail" => [post Work tasks::fail],
        "/v1/queues" => [get Any queues::list_queues],
        "/v1/workers" => [get Any queues::list_workers],
    }
    // The shell carries no data (a navigation cannot send a bearer header); the pages
    // fetch everything through the API above with the token.
    console {
        "/" => [get Open console::shell],
        "/console/{version}/{file}" => [get Open console::asset],
    }
}

/// Who is calling: the token's name and role when auth is on (set by the auth middleware);
/// both `None` when auth is off.
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<String>, pub Option<Role>);

impl Caller {
    /// The name recorded on decisions: the token name, or `anonymous`.
    pub fn name(&self) -> String {
        self.0.clone().unwrap_or_else(|| "anonymous".into())
    }

    /// The token's role; with auth off everyone may do everything, as an admin.
    pub fn role(&self) -> Role {
        self.1.unwrap_or(Role::Admin)
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
pub const DEFAULT_LIST_PAGE: usize = 50;

impl Paging {
    fn request(&self, limits: &ServerLimits) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIST_PAGE);
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
    .configure(register)
    .default_service(web::to(not_found));
}

/// The scope a route is served in and its path within it: its first two segments when
/// both are literal (`/v1/runs` for `/v1/runs`, `/v1/runs/counts` and `/v1/runs/{id}`),
/// else none (`""`). The router tries routes one after the other, each by its regular
/// expression; within scopes it tries only the routes under the path's prefix.
fn scoped(path: &'static str) -> (&'static str, &'static str) {
    let mut ends = path.match_indices('/').map(|(i, _)| i).skip(1);
    let (second, third) = (ends.next(), ends.next());
    let prefix_end = match (second, third) {
        (Some(_), Some(end)) => end,
        (Some(_), None) => path.len(),
        _ => return ("", path),
    };
    let prefix = &path[..prefix_end];
    if prefix.contains('{') {
        return ("", path);
    }
    (prefix, &path[prefix_end..])
}

/// Serves `resources` (route path, resource at its path within its [`scoped`] scope) in
/// their order, those of one scope together in it. Only routes under a scope's prefix can
/// match a path under it, so grouping them keeps the router's first match; a path under a
/// prefix that none of its routes match gets the app's default answer, as before.
fn serve_scoped(cfg: &mut web::ServiceConfig, resources: Vec<(&'static str, actix_web::Resource)>) {
    let mut groups: Vec<(&'static str, Vec<actix_web::Resource>)> = Vec::new();
    for (path, resource) in resources {
        let prefix = scoped(path).0;
        match groups
            .iter_mut()
            .find(|(p, _)| !p.is_empty() && *p == prefix)
        {
            Some((_, members)) => members.push(resource),
            None => groups.push((prefix, vec![resource])),
        }
    }
    for (prefix, members) in groups {
        if prefix.is_empty() {
            for resource in members {
                cfg.service(resource);
            }
        } else {
            let mut scope = web::scope(prefix);
            for resource in members {
                scope = scope.service(resource);
            }
            cfg.service(scope);
        }
    }
}

/// A resource whose unsupported methods answer `405` as `problem+json`.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// `405` with the `Allow` header the route table gives for the path.
async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let error = ApiError::MethodNotAllowed(format!(
        "{} is not supported on {}",
        req.method(),
        req.path()
    ));
    let pattern = req.match_pattern();
    let allow: Vec<String> = ROUTES
        .iter()
        .filter(|r| Some(r.path) == pattern.as_deref())
        .map(|r| r.method.to_ascii_uppercase())
        .collect();
    let mut response = actix_web::ResponseError::error_response(&error);
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow.join(", ")) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "{} {}",
        req.method(),
        req.path()
    )))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use actix_web::dev::Service;
    use actix_web::{App, test};

    use super::*;

    /// Paths for every pattern (its parameters filled in several ways) and their near misses.
    fn paths() -> Vec<String> {
        let fillers = [
            "abc", "run_01M8", "a%2Fb", "%61", "x%20y", "%C3%BC", "-", ".", "..", "%", "a:b",
        ];
        let mut out = vec![
            String::new(),
            "/".into(),
            "//".into(),
            "/v1".into(),
            "/v1/".into(),
            "/V1/runs".into(),
            "/v1//runs".into(),
        ];
        for (pattern, _) in PATTERNS.iter() {
            for filler in fillers {
                let path: String = pattern
                    .split('/')
                    .map(|s| if s.starts_with('{') { filler } else { s })
                    .collect::<Vec<_>>()
                    .join("/");
                out.push(path.clone());
                out.push(format!("{path}/"));
                out.push(format!("{path}//"));
                out.push(format!("{path}/x"));
                out.push(format!("/{path}"));
                out.push(path.replace("/v1/", "/v%31/"));
                out.push(path.replacen('s', "%73", 1));
                if let Some((head, _)) = path.rsplit_once('/') {
                    out.push(head.to_owned());
                    out.push(format!("{head}/"));
                }
            }
            let empty: String = pattern
                .split('/')
                .map(|s| if s.starts_with('{') { "" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            out.push(empty);
        }
        out
    }

    #[actix_web::test]
    async fn routes_are_matched_as_the_routers_resource_map_matches_them() {
        // Each path as the router saw it, with our pattern and the resource map's.
        type Seen = Vec<(String, Option<&'static str>, Option<String>)>;
        let seen: Rc<RefCell<Seen>> = Rc::default();
        let probe = seen.clone();
        let app = test::init_service(
            App::new()
                .wrap_fn(move |req, service| {
                    let path = req.match_info().as_str().to_owned();
                    let actix = req.request().resource_map().match_pattern(&path);
                    probe
                        .borrow_mut()
                        .push((path.clone(), pattern_of(&path), actix));
                    service.call(req)
                })
                .configure(configure),
        )
        .await;
        let paths = paths();
        for path in &paths {
            let uri = if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            };
            let _ = app
                .call(test::TestRequest::get().uri(&uri).to_request())
                .await;
        }
        let seen = seen.borrow();
        assert_eq!(seen.len(), paths.len());
        let mut matched = 0;
        for (path, ours, actix) in seen.iter() {
            let actix = actix
                .as_deref()
                .and_then(|p| ROUTES.iter().find(|r| r.path == p))
                .map(|r| r.path);
            assert_eq!(*ours, actix, "{path}");
            matched += usize::from(ours.is_some());
        }
        assert!(
            matched > PATTERNS.len() * 8,
            "{matched} paths matched a route"
        );
    }
}
