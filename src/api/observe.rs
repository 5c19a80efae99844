//! Per-request observability, the outermost middleware: every request gets a request id
//! (the client's `X-Request-Id` when it is sane, else a new ULID), echoed on the answer
//! and attached to a tracing span that covers the request's handling, so every line
//! logged for it carries the id; and its duration is recorded per route pattern
//! (`/v1/runs/{id}`, not the raw path, so ids do not multiply the series).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, web};
use tracing::Instrument;

use super::AppState;

/// The header carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The longest client-supplied request id kept.
const MAX_ID: usize = 128;

/// The id of the current request, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// Assigns the request id, runs the request inside its span, echoes the id and records
/// the duration.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = request_id(req.headers());
    let method = req.method().as_str().to_owned();
    let route = super::route_of(&req).unwrap_or(UNMATCHED);
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    req.extensions_mut().insert(RequestId(id.clone()));
    let result = next.call(req).instrument(span.clone()).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    let took = started.elapsed();
    if let Some(metrics) = metrics {
        metrics.http_request(&method, route, status.as_u16(), took);
    }
    tracing::debug!(parent: &span, status = status.as_u16(), took_us = took.as_micros() as u64, "answered");
    let mut res = result?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    Ok(res)
}

/// The client's `X-Request-Id` when it is 1 to 128 characters of letters, digits and
/// `-_.:`; otherwise a new ULID.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| is_sane(id))
        .map(str::to_owned)
        .unwrap_or_else(|| ulid::Ulid::generate().to_string())
}

fn is_sane(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static(REQUEST_ID),
            HeaderValue::from_str(id).unwrap(),
        );
        h
    }

    #[test]
    fn a_sane_client_id_is_kept() {
        assert_eq!(request_id(&headers("abc-123_x.y:z")), "abc-123_x.y:z");
    }

    #[test]
    fn an_odd_or_missing_id_is_replaced_by_a_ulid() {
        let long = "a".repeat(MAX_ID + 1);
        for odd in ["", "has space", "semi;colon", "<script>", long.as_str()] {
            let id = request_id(&headers(odd));
            assert_ne!(id, odd);
            assert!(ulid::Ulid::from_string(&id).is_ok(), "{id}");
        }
        assert!(ulid::Ulid::from_string(&request_id(&HeaderMap::new())).is_ok());
    }
}
