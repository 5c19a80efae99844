//! `/v1/events`: the events feed (DESIGN §11), every run and step event of the outbox (the
//! objects the hooks receive, plus their outbox `id`) in one global order, as pages or
//! live over Server-Sent Events.
//!
//! `id` is the resume position: a page's `next_after`, or the stream's `Last-Event-ID`,
//! continues with the next event after it, with no gap and no repeat (see `crate::feed`).
//! `order=desc` pages backwards from the newest event (`before`, `next_before`): what a
//! console or `orchestrator events` shows first, before following the stream from the
//! newest id it read.
//! The stream shares the log streams' limit (`logs.max_streams`) and keep-alive
//! (`logs.keep_alive`), and ends with `event: shutdown` when the server stops.

use actix_web::http::header::HeaderMap;
use actix_web::{HttpRequest, HttpResponse, Responder, web};
use actix_web_lab::sse::{self, Sse};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::schemas::Problem;
use super::sse_batch;
use super::{ApiError, AppState};
use crate::feed::FeedItem;
use crate::store::{EventFilter, StoredEvent};

/// Events answered by `GET /v1/events` without `limit`.
const DEFAULT_PAGE: usize = 100;

/// Filters and position of both routes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedQuery {
    after: Option<u64>,
    workflow_id: Option<String>,
    run_id: Option<String>,
    /// One type or several, comma-separated.
    #[serde(rename = "type")]
    kind: Option<String>,
    limit: Option<usize>,
    before: Option<u64>,
    order: Option<String>,
}

/// Most distinct types one filter may name (there are a dozen event types).
const MAX_TYPES: usize = 32;

impl FeedQuery {
    fn filter(&self) -> Result<EventFilter, ApiError> {
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        let types: std::collections::BTreeSet<String> = self
            .kind
            .iter()
            .flat_map(|k| k.split(','))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        if types.len() > MAX_TYPES {
            return Err(ApiError::bad_request(
                "/type",
                format!(
                    "type names {} types; at most {MAX_TYPES} may be asked for at once",
                    types.len()
                ),
            ));
        }
        Ok(EventFilter {
            run_id: non_empty(&self.run_id),
            workflow_id: non_empty(&self.workflow_id),
            types: types.into_iter().collect(),
            before: self.before,
            newest_first: self.order.as_deref() == Some("desc"),
        })
    }
}

/// One event of the feed: a hook event and its outbox position.
#[derive(ToSchema)]
#[allow(dead_code)] // described, never built
pub struct FeedEvent {
    /// The outbox position: the global order, and where to resume.
    id: u64,
    /// `run.started`, `step.succeeded`, `run.waiting_approval`, …
    #[schema(rename = "type")]
    kind: String,
    run_id: String,
    workflow_id: String,
    step: Option<String>,
    status: String,
    #[schema(format = DateTime)]
    ts: String,
    /// Increases by one per event within a run.
    seq: u64,
}

/// A page of the feed.
#[derive(ToSchema)]
#[allow(dead_code)] // described, never built
pub struct EventPage {
    /// Oldest first; newest first with `order=desc`.
    items: Vec<FeedEvent>,
    /// The `after` of the next page when this one was full; `null` at the end. Absent
    /// with `order=desc`.
    next_after: Option<u64>,
    /// With `order=desc`: the `before` of the next (older) page when this one was full;
    /// `null` at the oldest event.
    next_before: Option<u64>,
}

/// The feed's JSON for one event.
fn item(event: &StoredEvent) -> Value {
    let mut value = crate::hooks::payload(event);
    if let Value::Object(map) = &mut value {
        map.insert("id".into(), event.id.into());
    }
    value
}

/// Events after `after` (default: from the start), oldest first.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    operation_id = "list_events",
    params(
        ("after" = Option<u64>, Query, description = "Events after this id (default 0)"),
        ("workflow_id" = Option<String>, Query, description = "Only this workflow's runs"),
        ("run_id" = Option<String>, Query, description = "Only this run"),
        ("type" = Option<String>, Query, description = "Only these types, comma-separated (at most 32)"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size (default 100, at most limits.max_page)"),
        ("order" = Option<String>, Query, description = "`asc` (default: oldest first, from \
            `after`) or `desc` (newest first, before `before`)"),
        ("before" = Option<u64>, Query, description = "Only events before this id (with \
            `order=desc`, the next page's `next_before`)")
    ),
    responses(
        (status = 200, description = "A page of the feed", body = EventPage),
        (status = 400, description = "Bad paging or an unknown parameter", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn list(
    state: web::Data<AppState>,
    q: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let max = state.limits.max_page;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            "/limit",
            format!("limit must be between 1 and {max}"),
        ));
    }
    let newest_first = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "/order",
                format!("order must be asc or desc, not {other:?}"),
            ));
        }
    };
    let events = state
        .store
        .list_events(&q.filter()?, q.after.unwrap_or(0), limit)
        .await?;
    let next = events
        .last()
        .map(|e| e.id)
        .filter(|_| events.len() == limit);
    let items: Vec<Value> = events.iter().map(item).collect();
    let page = if newest_first {
        json!({"items": items, "next_before": next})
    } else {
        json!({"items": items, "next_after": next})
    };
    Ok(HttpResponse::Ok().json(page))
}

/// The feed after `Last-Event-ID` (or `?after=`, or from the start), then live.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    operation_id = "stream_events",
    params(
        ("after" = Option<u64>, Query, description = "Resume after this id (Last-Event-ID wins)"),
        ("workflow_id" = Option<String>, Query, description = "Only this workflow's runs"),
        ("run_id" = Option<String>, Query, description = "Only this run"),
        ("type" = Option<String>, Query, description = "Only these types, comma-separated (at most 32)"),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received")
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `event` (id = the event's id, data = \
            the event), keep-alive comments, and `shutdown` when the server stops",
            body = String, content_type = "text/event-stream"),
        (status = 400, description = "A Last-Event-ID that is not an id, or an unknown \
            parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "logs.max_streams streams are open", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn stream(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<FeedQuery>,
) -> Result<impl Responder, ApiError> {
    for (set, name) in [
        (q.limit.is_some(), "limit"),
        (q.before.is_some(), "before"),
        (q.order.is_some(), "order"),
    ] {
        if set {
            return Err(ApiError::bad_request(
                &format!("/{name}"),
                format!("the stream takes no {name}: it sends every later event, oldest first"),
            ));
        }
    }
    let filter = q.filter()?;
    let after = match last_event_id(req.headers())? {
        Some(id) => id,
        None => q.after.unwrap_or(0),
    };
    let permit = state.log_streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Busy(format!(
            "{} streams are open, the most this server allows; retry shortly",
            state.logs.max_streams
        ))
    })?;
    let mut last = after;
    let events = state.feed.follow(filter, after).map(move |next| {
        // The permit lives as long as the stream.
        let _open = &permit;
        match next {
            Ok(FeedItem::Event(event)) => {
                last = event.id;
                Ok(sse::Event::from(
                    sse::Data::new(item(&event).to_string())
                        .event("event")
                        .id(event.id.to_string()),
                ))
            }
            Ok(FeedItem::Shutdown) => Ok(sse::Event::from(
                sse::Data::new(json!({"last_id": last}).to_string()).event("shutdown"),
            )),
            Err(e) => {
                tracing::warn!(error = %e, "events stream stopped");
                Err(e)
            }
        }
    });
    Ok(sse_batch::respond(
        Sse::from_stream(events).with_keep_alive(state.logs.keep_alive),
    ))
}

/// `Last-Event-ID`: the id of the last event the client received.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("Last-Event-ID") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_request("", "Last-Event-ID must be the id of an event"))
}
