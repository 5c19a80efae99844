//! Unknown query parameters answer `400` instead of being ignored (a misspelt filter
//! would otherwise list everything). The parameters a route takes are the ones its
//! OpenAPI operation documents, so the document and the server cannot disagree; a name
//! ending in `{key}` (`context.{key}`) stands for any name with that prefix. Runs after
//! the token check, so unauthenticated callers learn nothing from it.

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

/// Refuses a request naming a query parameter its route does not take.
pub async fn strict_query(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let refused = match (req.query_string(), req.match_pattern()) {
        ("", _) | (_, None) => None,
        (_, Some(pattern)) if OPEN_QUERY.contains(&pattern.as_str()) => None,
        (query, Some(pattern)) => unknown(req.method().as_str(), &pattern, query),
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
        &format!("/{}", name.replace('~', "~0").replace('/', "~1")),
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
    fn undocumented_routes_are_not_checked() {
        assert_eq!(unknown("GET", "/console/{version}/{file}", "x=1"), None);
    }
}
