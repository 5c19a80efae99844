//! Unknown query parameters answer `400` instead of being ignored (a misspelt filter
//! would otherwise list everything). The parameters a route takes are the ones its
//! OpenAPI operation documents, so the document and the server cannot disagree; a name
//! ending in `{key}` (`context.{key}`) stands for any name with that prefix. Runs after
//! the token check, so unauthenticated callers learn nothing from it.
//!
//! A NUL character (`%00`) in the path or in a query parameter is `400` too: no id or
//! filter holds one, and PostgreSQL refuses any text that does (it would answer `503`).

use std::collections::HashMap;
use std::sync::OnceLock;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::Query;
use actix_web::{Error, ResponseError};

use super::ApiError;
use super::openapi::document;

/// Routes whose query belongs to the caller: a webhook's query is the sender's, handed to
/// the trigger as `request.query`.
const OPEN_QUERY: [&str; 1] = ["/hooks/{name}"];

/// The query parameters of each documented operation, by `(method, path pattern)`.
type Known = HashMap<(String, String), Vec<String>>;

fn known() -> &'static Known {
    static KNOWN: OnceLock<Known> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known = Known::new();
        let Some(paths) = document()["paths"].as_object() else {
            return known;
        };
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                let names = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect();
                known.insert((method.clone(), path.clone()), names);
            }
        }
        known
    })
}

/// True when `name` is one of `allowed` (or has the prefix of a `{key}` pattern).
fn takes(allowed: &[String], name: &str) -> bool {
    allowed.iter().any(|a| match a.strip_suffix("{key}") {
        Some(prefix) => name.len() > prefix.len() && name.starts_with(prefix),
        None => a == name,
    })
}

/// The first query parameter the operation does not take, with the ones it does.
fn unknown(method: &str, pattern: &str, query: &str) -> Option<(String, Vec<String>)> {
    let allowed = known().get(&(method.to_ascii_lowercase(), pattern.to_owned()))?;
    let pairs = Query::<Vec<(String, String)>>::from_query(query).ok()?;
    pairs
        .into_inner()
        .into_iter()
        .map(|(name, _)| name)
        .find(|name| !takes(allowed, name))
        .map(|name| (name, allowed.clone()))
}

/// `400` when the (still percent-encoded) `path` or a parameter of `query` holds NUL.
fn holds_nul(path: &str, query: &str) -> Option<ApiError> {
    // A NUL can only arrive encoded: the HTTP parser refuses a raw one.
    if path.contains("%00") {
        return Some(ApiError::bad_request(
            "",
            "the path holds a NUL character (%00), which no id has",
        ));
    }
    if !query.contains("%00") {
        return None;
    }
    let pairs = Query::<Vec<(String, String)>>::from_query(query).ok()?;
    let (name, _) = pairs
        .into_inner()
        .into_iter()
        .find(|(name, value)| name.contains('\0') || value.contains('\0'))?;
    Some(ApiError::bad_request(
        &format!("/{}", pointer_token(&name)),
        format!("query parameter {name:?} holds a NUL character (%00)"),
    ))
}

fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Refuses a request naming a query parameter its route does not take, or holding NUL.
pub async fn strict_query(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let pattern = super::route_of(&req);
    let open = pattern.is_some_and(|p| OPEN_QUERY.contains(&p));
    if let Some(error) = holds_nul(req.path(), if open { "" } else { req.query_string() }) {
        return Ok(req
            .into_response(error.error_response())
            .map_into_right_body());
    }
    let refused = match (req.query_string(), pattern) {
        ("", _) | (_, None) => None,
        _ if open => None,
        (query, Some(pattern)) => unknown(req.method().as_str(), pattern, query),
    };
    let Some((name, allowed)) = refused else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let takes = if allowed.is_empty() {
        "it takes none".to_owned()
    } else {
        format!("it takes {}", allowed.join(", "))
    };
    let error = ApiError::bad_request(
        &format!("/{}", pointer_token(&name)),
        format!("unknown query parameter {name:?}; {takes}"),
    );
    Ok(req
        .into_response(error.error_response())
        .map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_parameters_pass_and_others_are_named() {
        assert_eq!(unknown("GET", "/v1/runs", "status=FAILED&limit=5"), None);
        assert_eq!(unknown("GET", "/v1/runs", "context.customer=acme"), None);
        let (name, allowed) = unknown("GET", "/v1/runs", "stauts=FAILED").unwrap();
        assert_eq!(name, "stauts");
        assert!(allowed.contains(&"status".to_owned()));
        assert_eq!(
            unknown("GET", "/v1/runs/{id}", "x=1").map(|(n, _)| n),
            Some("x".into())
        );
        assert!(!takes(&["context.{key}".into()], "context."));
    }

    #[test]
    fn a_nul_in_the_path_or_a_parameter_is_named() {
        assert!(holds_nul("/v1/runs/run_1", "status=FAILED&x=%2500").is_none());
        assert!(holds_nul("/v1/runs/run%00", "").is_some());
        let ApiError::BadRequest { errors, .. } =
            holds_nul("/v1/runs", "status=FAILED&context.k=a%00b").unwrap()
        else {
            panic!("not a bad request")
        };
        assert_eq!(errors[0].pointer, "/context.k");
        let ApiError::BadRequest { errors, .. } = holds_nul("/v1/runs", "a%2Fb%00=1").unwrap()
        else {
            panic!("not a bad request")
        };
        assert_eq!(errors[0].pointer, "/a~1b\u{0}");
    }

    #[test]
    fn undocumented_routes_are_not_checked() {
        assert_eq!(unknown("GET", "/console/{version}/{file}", "x=1"), None);
    }
}
