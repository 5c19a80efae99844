//! The one place where errors become HTTP answers: `application/problem+json` (RFC 9457)
//! with `type`, `title`, `status`, `detail` and, for bad input, `errors` listing each
//! violation with its JSON pointer. Internal detail goes to the log, never to the client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::definition::Invalid;
use crate::engine::EngineError;
use crate::problems::{Violation, chain};
use crate::store::StoreError;

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A definition failed validation.
    #[error("{0}")]
    Invalid(Invalid),
    /// Other bad input, with the places it went wrong.
    #[error("{detail}")]
    BadRequest {
        detail: String,
        errors: Vec<Violation>,
    },
    /// No valid bearer token (auth is on): `401` with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// The token is valid but its role may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// The store failed: `503` while it is unavailable, `500` for data it cannot read.
    #[error(transparent)]
    Store(StoreError),
    /// The server is at a configured capacity; the client may try again shortly.
    #[error("{0}")]
    Busy(String),
}

impl ApiError {
    /// Bad input at one place.
    pub fn bad_request(pointer: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self::BadRequest {
            errors: vec![Violation::new(pointer, detail.clone())],
            detail,
        }
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::Invalid(e) => match e.stage {
                crate::definition::Stage::Syntax => ("malformed-body", "Malformed request body"),
                crate::definition::Stage::Schema => {
                    ("schema-violation", "Definition does not match the schema")
                }
                crate::definition::Stage::Semantic => {
                    ("invalid-definition", "Invalid workflow definition")
                }
            },
            Self::BadRequest { .. } => ("bad-request", "Bad request"),
            Self::Unauthorized(_) => ("unauthorized", "Unauthorized"),
            Self::Forbidden(_) => ("forbidden", "Forbidden"),
            Self::NotFound(_) => ("not-found", "Not found"),
            Self::MethodNotAllowed(_) => ("method-not-allowed", "Method not allowed"),
            Self::Conflict(_) => ("conflict", "Conflict"),
            Self::TooLarge(_) => ("payload-too-large", "Payload too large"),
            Self::Store(e) if e.is_unavailable() => ("unavailable", "Service unavailable"),
            Self::Store(_) => ("internal", "Internal error"),
            Self::Busy(_) => ("busy", "Server busy"),
        }
    }
}

/// Why the store cannot serve, as a problem's `detail` says it: `the store is unavailable:
/// it refuses writes (…)`.
pub fn unavailable_detail(e: &StoreError) -> String {
    format!("the {}", chain(e)).replacen("store unavailable", "store is unavailable", 1)
}

/// The body of every error answer (RFC 9457).
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [Violation]>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) | Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (slug, title) = self.slug_and_title();
        let detail = match self {
            Self::Store(e) if e.is_unavailable() => {
                tracing::warn!(reason = %chain(e), "store unavailable");
                unavailable_detail(e)
            }
            Self::Store(e) => {
                tracing::error!(reason = %chain(e), "internal error");
                "the server hit an unexpected condition; see its log".to_owned()
            }
            other => other.to_string(),
        };
        let errors = match self {
            Self::Invalid(e) => Some(e.violations.as_slice()),
            Self::BadRequest { errors, .. } if !errors.is_empty() => Some(errors.as_slice()),
            _ => None,
        };
        let body = Problem {
            kind: format!("https://orchestrator.dev/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = HttpResponse::build(status).json(body);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            Self::Busy(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"orchestrator\""),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Self::Invalid(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(why) => Self::Conflict(why),
            StoreError::Invalid(why) => Self::bad_request("", why),
            other => Self::Store(other),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => Self::NotFound(what),
            EngineError::Conflict(why) => Self::Conflict(why),
            EngineError::Invalid {
                message,
                violations,
            } => Self::BadRequest {
                detail: message,
                errors: violations,
            },
            EngineError::Store(e) => Self::Store(e),
        }
    }
}
