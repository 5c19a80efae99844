//! `/v1/runs/{id}/logs`: read a run's log (JSON or text), append client lines, and
//! follow it live over Server-Sent Events (`/logs/stream`).
//!
//! The stream sends, for each entry in `seq` order, an `event: status` when the entry
//! announces a status change and then the entry itself as `event: log` with `id: <seq>`;
//! `event: end` once the run is over and everything before it was sent, then it closes;
//! `event: shutdown` instead when the server stops first (the run goes on after the next
//! start, and the client resumes after `last_seq`).
//! The status event comes first and carries no id, so a client that reconnects with
//! `Last-Event-ID` may see a status event again but never misses one, and sees every
//! entry exactly once. A reconnect to a finished run with nothing left to send answers
//! `204`, which tells a browser's `EventSource` to stop reconnecting. Streams carry
//! `X-Accel-Buffering: no`, so a proxy such as nginx passes events on as they come.

use actix_web::http::header::{self, HeaderMap};
use actix_web::{Either, HttpRequest, HttpResponse, Responder, web};
use actix_web_lab::sse::{self, Sse};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::body::read_limited;
use super::schemas::{Appended, LogPage, Problem};
use super::sse_batch;
use super::{ApiError, AppState};
use crate::logs::text::{client_lines, text_line};
use crate::logs::{TailItem, entry_bytes};
use crate::model::{LogEntry, LogLevel};
use crate::store::StoreError;

/// Entries answered by `GET …/logs` without `limit`.
const DEFAULT_LOG_PAGE: usize = 1000;

/// A page of `GET …/logs` ends once its entries pass this many bytes, with `next_after`
/// set: a page of `logs.max_page` lines of `logs.max_line_bytes` would be ~80 MB.
const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Entries read from the store at once while a page is gathered (bounds what one read holds).
const SLICE: usize = 1000;

#[derive(Deserialize)]
pub(super) struct ReadQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/runs/{id}/logs`: `{items, next_after}`, or one line per entry with
/// `Accept: text/plain` (then `next_after` is the `Next-After` header).
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/logs",
    tag = "logs",
    operation_id = "read_logs",
    params(
        ("id" = String, Path, description = "Run id"),
        ("after" = Option<u64>, Query, description = "Entries after this seq (default 0)"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size (default 1000, at most logs.max_page)")
    ),
    responses(
        (status = 200, description = "A page of the log", content(
            (LogPage = "application/json"),
            (String = "text/plain")
        )),
        (status = 400, description = "Bad paging", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn read(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let max = state.logs.max_page;
    let limit = q.limit.unwrap_or(DEFAULT_LOG_PAGE.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            "/limit",
            format!("limit must be between 1 and {max}"),
        ));
    }
    let (items, cut) = read_page(&state, &id, q.after.unwrap_or(0), limit).await?;
    // More may follow only when the page is full (by count or by bytes).
    let next_after = items
        .last()
        .map(|e| e.seq)
        .filter(|_| cut || items.len() == limit);
    if !wants_text(req.headers()) {
        return Ok(HttpResponse::Ok().json(json!({"items": items, "next_after": next_after})));
    }
    let body: String = items.iter().map(text_line).collect();
    let mut answer = HttpResponse::Ok();
    answer.content_type("text/plain; charset=utf-8");
    if let Some(seq) = next_after {
        answer.insert_header(("Next-After", seq.to_string()));
    }
    Ok(answer.body(body))
}

/// Up to `limit` entries after `after`, read [`SLICE`] at a time and ending early (at least
/// one entry) once they pass [`PAGE_BYTES`]; true when the byte bound ended it.
async fn read_page(
    state: &AppState,
    run_id: &str,
    after: u64,
    limit: usize,
) -> Result<(Vec<LogEntry>, bool), ApiError> {
    let (mut items, mut bytes, mut cursor) = (Vec::new(), 0, after);
    while items.len() < limit {
        let want = (limit - items.len()).min(SLICE);
        let slice = state.engine.read_logs(run_id, cursor, want).await?;
        let short = slice.len() < want;
        for entry in slice {
            bytes += entry_bytes(&entry);
            if bytes > PAGE_BYTES && !items.is_empty() {
                return Ok((items, true));
            }
            cursor = entry.seq;
            items.push(entry);
        }
        if short {
            break;
        }
    }
    Ok((items, false))
}

/// True when `Accept` names `text/plain` before (or without) `application/json`.
fn wants_text(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|media| {
            media
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .find(|media| media == "text/plain" || media == "application/json")
        .is_some_and(|media| media == "text/plain")
}

#[derive(Deserialize)]
pub(super) struct AppendQuery {
    level: Option<String>,
}

/// `POST /v1/runs/{id}/logs`: one `client` entry per non-blank line of the text body,
/// at `?level=` (default `info`); answers `201` with the `seq` numbers assigned.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/logs",
    tag = "logs",
    operation_id = "append_logs",
    params(
        ("id" = String, Path, description = "Run id"),
        ("level" = Option<String>, Query, description = "debug, info (default), warn or error")
    ),
    request_body(content = String, content_type = "text/plain",
        description = "One entry per non-blank line"),
    responses(
        (status = 201, description = "Appended", body = Appended),
        (status = 400, description = "Not UTF-8, no lines, or unknown level", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The log is full (logs.max_entries_per_run)", body = Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "Body over logs.body_bytes", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn append(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<AppendQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let level = match q.level.as_deref() {
        None | Some("") => LogLevel::Info,
        Some(text) => text.to_ascii_lowercase().parse().map_err(|_| {
            ApiError::bad_request("/level", "level must be debug, info, warn or error")
        })?,
    };
    let mut payload = payload.into_inner();
    let body = read_limited(&req, &mut payload, state.logs.body_bytes).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request("", format!("the body must be UTF-8 text: {e}")))?;
    let lines = client_lines(text, level, state.logs.max_line_bytes);
    if lines.entries.is_empty() {
        return Err(ApiError::bad_request(
            "",
            "the body holds no log lines (one entry per non-blank line)",
        ));
    }
    let written = state.engine.append_client_logs(&id, lines.entries).await?;
    let seqs: Vec<u64> = written.iter().map(|e| e.seq).collect();
    Ok(HttpResponse::Created().json(json!({"seqs": seqs, "truncated": lines.truncated})))
}

#[derive(Deserialize)]
pub(super) struct StreamQuery {
    after: Option<u64>,
}

/// Why an open stream stops without `end`; the client reconnects with `Last-Event-ID`.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode a log event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// `GET /v1/runs/{id}/logs/stream`: the log after `Last-Event-ID` (or `?after=`, or from
/// the start), then live, until the run is over. An unknown run is `404` before any
/// stream starts.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/logs/stream",
    tag = "logs",
    operation_id = "stream_logs",
    params(
        ("id" = String, Path, description = "Run id"),
        ("after" = Option<u64>, Query, description = "Resume after this seq (Last-Event-ID wins)"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last seq received")
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `log` (id = seq, data LogEntry), \
            `status` (data StatusEvent), then `end` (data EndEvent) when the run is over, or \
            `shutdown` (data EndEvent) when the server stops first",
            body = String, content_type = "text/event-stream"),
        (status = 204, description = "The run is finished and everything after Last-Event-ID \
            (or `after`) was sent: nothing more will come"),
        (status = 400, description = "A Last-Event-ID the log does not have", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem,
            content_type = "application/problem+json"),
        (status = 503, description = "logs.max_streams streams are open", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn stream(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<StreamQuery>,
) -> Result<impl Responder, ApiError> {
    let after = match last_event_id(req.headers())? {
        Some(seq) => seq,
        None => q.after.unwrap_or(0),
    };
    let permit = state.log_streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Busy(format!(
            "{} log streams are open, the most this server allows; retry shortly",
            state.logs.max_streams
        ))
    })?;
    let tail = state.engine.tail_logs(&id, after).await?;
    if after > 0 && state.engine.log_is_drained(&id, after).await? {
        return Ok(Either::Right(HttpResponse::NoContent().finish()));
    }
    let run_id = id.into_inner();
    let events = tail.into_stream().flat_map(move |item| {
        // The permit lives as long as the stream.
        let _open = &permit;
        let events = match item {
            Ok(item) => encode(item),
            Err(e) => {
                tracing::warn!(run_id, error = %e, "log stream stopped");
                vec![Err(e.into())]
            }
        };
        futures::stream::iter(events)
    });
    Ok(Either::Left(sse_batch::respond(
        Sse::from_stream(events).with_keep_alive(state.logs.keep_alive),
    )))
}

/// `Last-Event-ID`: the `seq` of the last entry the client received.
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
        .map_err(|_| ApiError::bad_request("", "Last-Event-ID must be the seq of a log entry"))
}

/// The SSE events of one tail item.
fn encode(item: TailItem) -> Vec<Result<sse::Event, StreamError>> {
    let encoded = match item {
        TailItem::Entry(entry) => {
            let log = Ok(sse::Data::new(entry.json().to_owned())
                .event("log")
                .id(entry.seq.to_string()));
            match &entry.status {
                Some(change) => vec![sse::Data::new_json(change).map(|d| d.event("status")), log],
                None => vec![log],
            }
        }
        TailItem::End { status, last_seq } => {
            vec![
                sse::Data::new_json(json!({"run_status": status, "last_seq": last_seq}))
                    .map(|d| d.event("end")),
            ]
        }
        TailItem::Shutdown { status, last_seq } => {
            vec![
                sse::Data::new_json(json!({"run_status": status, "last_seq": last_seq}))
                    .map(|d| d.event("shutdown")),
            ]
        }
    };
    encoded
        .into_iter()
        .map(|data| data.map(sse::Event::from).map_err(StreamError::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn text_is_chosen_only_when_asked_for_before_json() {
        assert!(wants_text(&accept("text/plain")));
        assert!(wants_text(&accept(
            "text/plain; charset=utf-8, application/json"
        )));
        assert!(!wants_text(&accept("application/json, text/plain")));
        assert!(!wants_text(&accept("*/*")));
        assert!(!wants_text(&HeaderMap::new()));
    }

    #[test]
    fn last_event_id_must_be_a_seq() {
        let mut headers = HeaderMap::new();
        assert_eq!(last_event_id(&headers).unwrap(), None);
        headers.insert(
            header::HeaderName::from_static("last-event-id"),
            HeaderValue::from_static("42"),
        );
        assert_eq!(last_event_id(&headers).unwrap(), Some(42));
        headers.insert(
            header::HeaderName::from_static("last-event-id"),
            HeaderValue::from_static("x"),
        );
        assert!(last_event_id(&headers).is_err());
    }
}
