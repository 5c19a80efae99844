//! Browser access from other origins (CORS), as middleware before the token check.
//!
//! Only origins listed in `server.cors.allowed_origins` (or any, with `*`) get
//! `Access-Control-Allow-Origin` on their answers; other requests pass unchanged (a
//! browser then withholds the answer from the page; curl and the console, served from the
//! API's own origin, need nothing). A preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) on a served path answers here, before authentication
//! (a preflight carries no token): `204` with the path's methods from the route table, or
//! `403` when the origin is not listed. Anything else goes on to the token check and the
//! router (a plain `OPTIONS` is `405` with `Allow`, an unknown path `404`).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, ResponseError, web};

use super::{ApiError, AppState, ROUTES};

/// Request headers a page may send.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, Idempotency-Key, Last-Event-ID, X-Request-Id, \
     If-None-Match, Cache-Control";
/// Response headers a page may read besides the simple ones.
const EXPOSE_HEADERS: &str =
    "Location, Retry-After, WWW-Authenticate, X-Request-Id, Next-After, Allow, ETag";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// Answers preflights and adds CORS headers for allowed origins.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let allowed: std::sync::Arc<[String]> = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.cors_origins.clone())
        .unwrap_or_else(|| Vec::new().into());
    let origin = allowed_origin(&allowed, req.headers());
    if req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && let Some(methods) = methods_of(super::route_of(&req))
    {
        let response = preflight(req.headers(), origin.as_ref(), &methods);
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut res = next.call(req).await?;
    if let Some(origin) = origin {
        let headers = res.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(res.map_into_left_body())
}

/// The request's `Origin` when it may call from a browser.
fn allowed_origin(allowed: &[String], headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    allowed
        .iter()
        .any(|a| a == "*" || a == text)
        .then(|| origin.clone())
}

/// The methods served on a route pattern (upper case, `OPTIONS` last); `None` when no
/// route has it.
fn methods_of(pattern: Option<&str>) -> Option<Vec<String>> {
    let pattern = pattern?;
    let mut methods: Vec<String> = ROUTES
        .iter()
        .filter(|r| r.path == pattern)
        .map(|r| r.method.to_ascii_uppercase())
        .collect();
    if methods.is_empty() {
        return None;
    }
    methods.push("OPTIONS".into());
    Some(methods)
}

/// The answer to a preflight: the path's methods for a listed origin, else `403`.
fn preflight(
    headers: &HeaderMap,
    origin: Option<&HeaderValue>,
    methods: &[String],
) -> HttpResponse {
    let allow = methods.join(", ");
    let Some(origin) = origin else {
        let from = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("(none)");
        return ApiError::Forbidden(format!(
            "origin {from} may not call this API from a browser; list it in \
             server.cors.allowed_origins"
        ))
        .error_response();
    };
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, allow.clone()))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE))
        .insert_header((header::ALLOW, allow))
        .insert_header((
            header::VARY,
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_listed_origins_are_allowed_and_star_allows_any() {
        let listed = vec!["https://app.example.com".to_owned()];
        assert!(allowed_origin(&listed, &origin("https://app.example.com")).is_some());
        assert!(allowed_origin(&listed, &origin("https://evil.example.com")).is_none());
        assert!(allowed_origin(&listed, &HeaderMap::new()).is_none());
        assert!(allowed_origin(&[], &origin("https://app.example.com")).is_none());
        assert!(allowed_origin(&["*".into()], &origin("http://x:1")).is_some());
    }

    #[test]
    fn a_path_answers_preflights_with_its_own_methods() {
        assert_eq!(
            methods_of(Some("/v1/runs/{id}/logs")).unwrap(),
            vec!["GET", "POST", "OPTIONS"]
        );
        assert!(methods_of(Some("/nowhere")).is_none());
        assert!(methods_of(None).is_none());
    }
}
