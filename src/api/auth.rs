//! Bearer-token authentication and role checks, as middleware in front of every route.
//!
//! With `auth.tokens` empty the API is open and callers are `anonymous`. Otherwise every
//! route whose [`Access`] is not `Open` needs `Authorization: Bearer <token>`: a missing or
//! unknown token is `401`, a `reader` token on a `Write` route is `403`. The route's access
//! comes from the same table that registers it ([`super::ROUTES`]); a request matching no
//! route (404/405 follow) only needs a valid token, so unauthenticated callers learn
//! nothing about which paths exist. The caller's token name is put in the request as a
//! [`Caller`] for handlers to record.
//!
//! Tokens are compared as SHA-256 digests in constant time, so neither a token's length nor
//! how much of it matched shows in the answer time.
//!
//! `POST /hooks/{name}` ([`Access::Signed`]) is decided per trigger, once the handler knows
//! it: [`admit_delivery`] takes a valid signature (or GitLab token) for a trigger with a
//! secret, and an admin token for one without; the middleware only refuses a bearer token
//! that is sent and wrong.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, ResponseError, web};
use subtle::ConstantTimeEq;

use super::{Access, ApiError, AppState, Caller, access_of};
use crate::config::{ApiToken, Role, token_digest};
use crate::store::WebhookTrigger;

/// Checks the caller's token against the route's access before the route runs.
pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let tokens = match req.app_data::<web::Data<AppState>>() {
        Some(state) if !state.auth.is_empty() => state.auth.clone(),
        _ => return Ok(next.call(req).await?.map_into_left_body()),
    };
    let access = access_of(req.method().as_str(), super::route_of(&req));
    match decide(&tokens, access, req.headers()) {
        Ok(caller) => {
            if let Some(caller) = caller {
                req.extensions_mut().insert(caller);
            }
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(e) => {
            let response = e.error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// Who the caller is, or why they may not go on. `None` for an open route.
fn decide(
    tokens: &[ApiToken],
    access: Option<Access>,
    headers: &HeaderMap,
) -> Result<Option<Caller>, ApiError> {
    if access == Some(Access::Open) || (access == Some(Access::Signed) && bearer(headers).is_none())
    {
        return Ok(None);
    }
    let secret = bearer(headers).ok_or_else(|| {
        ApiError::Unauthorized("this endpoint needs an Authorization: Bearer <token> header".into())
    })?;
    let token = find(tokens, secret)
        .ok_or_else(|| ApiError::Unauthorized("the bearer token is not valid".into()))?;
    let (allowed, needs) = match access {
        Some(Access::Write) => (token.role == Role::Admin, "admin"),
        Some(Access::Work) => (token.role != Role::Reader, "admin or worker"),
        Some(Access::Read) => (token.role != Role::Worker, "admin or reader"),
        Some(Access::Open | Access::Any | Access::Signed) | None => (true, ""),
    };
    if !allowed {
        return Err(ApiError::Forbidden(format!(
            "token {:?} has the {} role; this request needs {needs}",
            token.name,
            token.role.as_str()
        )));
    }
    Ok(Some(Caller(Some(token.name.clone()), Some(token.role))))
}

/// Whether a delivery to `trigger` may start a run: with a secret, its proof header must
/// match the body (nothing else is accepted); without one, the caller needs an admin token
/// (when auth is on).
pub fn admit_delivery(
    tokens: &[ApiToken],
    headers: &HeaderMap,
    trigger: &WebhookTrigger,
    body: &[u8],
) -> Result<(), ApiError> {
    let Some(secret) = &trigger.secret else {
        if tokens.is_empty() {
            return Ok(());
        }
        return decide(tokens, Some(Access::Write), headers).map(|_| ());
    };
    let name = trigger.secret_header.as_str();
    let proof = headers.get(name).and_then(|v| v.to_str().ok());
    if crate::triggers::webhook::verify(secret, trigger.secret_header, proof, body) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(format!(
            "{name} is missing or does not match the body under the trigger's secret"
        )))
    }
}

/// The answer for a delivery to a trigger that does not exist: `404`, but `401` to a
/// caller without a valid token when auth is on, so trigger names do not leak.
pub fn unknown_trigger(tokens: &[ApiToken], headers: &HeaderMap, name: &str) -> ApiError {
    if !tokens.is_empty() && bearer(headers).and_then(|t| find(tokens, t)).is_none() {
        return ApiError::Unauthorized(
            "this endpoint needs a valid signature or an Authorization: Bearer <token> header"
                .into(),
        );
    }
    ApiError::NotFound(format!("trigger {name}"))
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The configured token whose digest equals the secret's. Every token is compared, in
/// constant time each, whichever matches.
fn find<'a>(tokens: &'a [ApiToken], secret: &str) -> Option<&'a ApiToken> {
    let digest = token_digest(secret);
    let mut found = None;
    for token in tokens {
        if bool::from(token.digest.ct_eq(&digest)) {
            found = Some(token);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn tokens() -> Vec<ApiToken> {
        vec![
            ApiToken {
                name: "ops".into(),
                role: Role::Admin,
                digest: token_digest("admin-secret-0123"),
            },
            ApiToken {
                name: "grafana".into(),
                role: Role::Reader,
                digest: token_digest("reader-secret-0123"),
            },
        ]
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn name(result: Result<Option<Caller>, ApiError>) -> Option<String> {
        result.unwrap().and_then(|c| c.0)
    }

    #[test]
    fn open_routes_need_no_token() {
        assert!(matches!(
            decide(&tokens(), Some(Access::Open), &HeaderMap::new()),
            Ok(None)
        ));
    }

    #[test]
    fn a_missing_malformed_or_unknown_token_is_unauthorized() {
        for headers in [
            HeaderMap::new(),
            with_auth("Basic b3BzOnNlY3JldA=="),
            with_auth("Bearer"),
            with_auth("Bearer admin-secret-012"),
            with_auth("Bearer admin-secret-01234"),
        ] {
            let err = decide(&tokens(), Some(Access::Read), &headers).unwrap_err();
            assert!(matches!(err, ApiError::Unauthorized(_)), "{headers:?}");
        }
        let err = decide(&tokens(), None, &HeaderMap::new()).unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(_)));
    }

    #[test]
    fn readers_read_and_only_admins_write() {
        let reader = with_auth("Bearer reader-secret-0123");
        let admin = with_auth("bearer  admin-secret-0123 ");
        assert_eq!(
            name(decide(&tokens(), Some(Access::Read), &reader)),
            Some("grafana".into())
        );
        let err = decide(&tokens(), Some(Access::Write), &reader).unwrap_err();
        assert!(matches!(err, ApiError::Forbidden(_)));
        assert_eq!(
            name(decide(&tokens(), Some(Access::Write), &admin)),
            Some("ops".into())
        );
        assert_eq!(
            name(decide(&tokens(), None, &reader)),
            Some("grafana".into())
        );
    }
}
