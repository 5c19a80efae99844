//! `GET /v1/runs` (search, newest first, full or summary) and `GET /v1/runs/counts` (runs
//! by status for the same filters). The query is parsed by hand because
//! `context.KEY=VALUE` names are open-ended: every value is checked, and a parameter
//! given twice is refused (except `status`, whose values add up).

use actix_web::web::Query;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::DateTime;
use serde_json::{Map, Value, json};

use super::run_summary::SummaryPage;
use super::schemas::{Problem, RunCounts, RunList};
use super::{ApiError, AppState, Paging};
use crate::config::ServerLimits;
use crate::model::{ContextMatch, PageRequest, RunFilter, RunStatus, Timestamp};

/// Runs, newest first, filtered.
#[utoipa::path(
    get,
    path = "/v1/runs",
    tag = "runs",
    operation_id = "list_runs",
    params(
        ("workflow_id" = Option<String>, Query, description = "Only runs of this workflow"),
        ("status" = Option<String>, Query, description = "Only runs with one of these statuses, \
            comma-separated (FAILED,WAITING_APPROVAL); may be repeated"),
        ("workflow_version" = Option<u32>, Query, minimum = 1, description = "Only runs of this version"),
        ("created_after" = Option<String>, Query, format = DateTime,
            description = "Only runs created at or after this RFC 3339 time"),
        ("created_before" = Option<String>, Query, format = DateTime,
            description = "Only runs created before this RFC 3339 time"),
        ("trigger" = Option<String>, Query, description = "Only runs started by a `schedule`, \
            a `webhook`, or through `POST /v1/runs` (`api`)"),
        ("context.{key}" = Option<String>, Query, description = "Only runs whose context member \
            KEY (a dotted path of object keys: `context.order.id`) equals the value: the string, \
            or a number, boolean or null written as JSON (`context.tier=2` matches 2 and \"2\")"),
        ("view" = Option<String>, Query, description = "`full` (default): runs as `GET /v1/runs/{id}` \
            answers them; `summary`: without context, step outputs, attempts, foreach items and \
            waits, approvals or re-run history, for light lists"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size (default 50, at most limits.max_page)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")
    ),
    responses(
        (status = 200, description = "A page of runs (RunSummary items with view=summary)", body = RunList),
        (status = 400, description = "A bad or unknown parameter, or bad paging", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let search = parse(req.query_string(), &state.limits, true)?;
    let page = state.engine.list_runs(&search.filter, &search.page).await?;
    if !search.filter.summary {
        return Ok(HttpResponse::Ok().json(page));
    }
    let summaries = SummaryPage::of(&page.items, page.next_cursor.as_deref());
    Ok(HttpResponse::Ok().json(summaries))
}

/// How many runs have each status, for the same filters as the list.
#[utoipa::path(
    get,
    path = "/v1/runs/counts",
    tag = "runs",
    operation_id = "count_runs",
    params(
        ("workflow_id" = Option<String>, Query, description = "Only runs of this workflow"),
        ("status" = Option<String>, Query, description = "Only these statuses, comma-separated"),
        ("workflow_version" = Option<u32>, Query, minimum = 1, description = "Only runs of this version"),
        ("created_after" = Option<String>, Query, format = DateTime, description = "Created at or after"),
        ("created_before" = Option<String>, Query, format = DateTime, description = "Created before"),
        ("trigger" = Option<String>, Query, description = "`schedule`, `webhook` or `api`"),
        ("context.{key}" = Option<String>, Query, description = "Context member KEY equals the value")
    ),
    responses(
        (status = 200, description = "Runs by status (statuses without runs are left out)", body = RunCounts),
        (status = 400, description = "A bad or unknown parameter", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub(super) async fn counts(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let search = parse(req.query_string(), &state.limits, false)?;
    let counts = state.store.count_runs_by_status(&search.filter).await?;
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let by_status: Map<String, Value> = counts
        .into_iter()
        .map(|(status, n)| (status.to_string(), json!(n)))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"counts": by_status, "total": total})))
}

/// The trigger types runs can be searched by (`api`: started through `POST /v1/runs`).
pub const TRIGGER_TYPES: [&str; 3] = ["api", "schedule", "webhook"];

/// The most `context.KEY` filters one search may have.
pub const MAX_CONTEXT_FILTERS: usize = 16;

/// A parsed run search.
pub struct RunSearch {
    pub filter: RunFilter,
    pub page: PageRequest,
}

/// Parses `query`; `paged` says whether `limit`, `cursor` and `view` are taken.
pub fn parse(query: &str, limits: &ServerLimits, paged: bool) -> Result<RunSearch, ApiError> {
    let pairs = Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|e| ApiError::bad_request("", format!("invalid query string: {e}")))?
        .into_inner();
    let mut filter = RunFilter::default();
    let mut paging = Paging {
        limit: None,
        cursor: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in pairs {
        let pointer = format!("/{}", name.replace('~', "~0").replace('/', "~1"));
        if name != "status" && seen.contains(&name) {
            return Err(ApiError::bad_request(
                &pointer,
                format!("{name} is given twice"),
            ));
        }
        seen.push(name.clone());
        match name.as_str() {
            "workflow_id" => filter.workflow_id = Some(value).filter(|v| !v.is_empty()),
            "status" => filter.statuses.extend(statuses(&value)?),
            "workflow_version" => {
                filter.workflow_version = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|&v| v > 0)
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                &pointer,
                                "workflow_version must be a positive integer",
                            )
                        })?,
                )
            }
            "created_after" => filter.created_after = Some(time(&pointer, &value)?),
            "created_before" => filter.created_before = Some(time(&pointer, &value)?),
            "trigger" => {
                if !TRIGGER_TYPES.contains(&value.as_str()) {
                    return Err(ApiError::bad_request(
                        &pointer,
                        format!("trigger must be one of {}", TRIGGER_TYPES.join(", ")),
                    ));
                }
                filter.trigger = Some(value);
            }
            "view" if paged => {
                filter.summary = match value.as_str() {
                    "summary" => true,
                    "full" | "" => false,
                    _ => {
                        return Err(ApiError::bad_request(
                            &pointer,
                            "view must be full or summary",
                        ));
                    }
                }
            }
            "limit" if paged => {
                paging.limit = Some(value.parse().map_err(|_| {
                    ApiError::bad_request(&pointer, "limit must be a positive integer")
                })?)
            }
            "cursor" if paged => paging.cursor = Some(value),
            other => match other.strip_prefix("context.") {
                Some(key) if !key.is_empty() && key.split('.').all(|k| !k.is_empty()) => {
                    if key.contains('.') && key.contains(['"', '\\']) {
                        return Err(ApiError::bad_request(
                            &pointer,
                            "a nested context key may not hold a quote or a backslash",
                        ));
                    }
                    if filter.context.len() == MAX_CONTEXT_FILTERS {
                        return Err(ApiError::bad_request(
                            &pointer,
                            format!("at most {MAX_CONTEXT_FILTERS} context filters per search"),
                        ));
                    }
                    filter.context.push(ContextMatch::parse(key, &value))
                }
                _ => {
                    return Err(ApiError::bad_request(
                        &pointer,
                        format!("unknown query parameter {other:?}"),
                    ));
                }
            },
        }
    }
    let mut seen_statuses = Vec::with_capacity(filter.statuses.len());
    filter.statuses.retain(|s| {
        let first = !seen_statuses.contains(s);
        seen_statuses.push(*s);
        first
    });
    let page = if paged {
        paging.request(limits)?
    } else {
        PageRequest::default()
    };
    Ok(RunSearch { filter, page })
}

/// `A,B,c`: statuses in any case.
fn statuses(text: &str) -> Result<Vec<RunStatus>, ApiError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.to_ascii_uppercase()
                .parse::<RunStatus>()
                .map_err(|_| ApiError::bad_request("/status", format!("unknown status {s:?}")))
        })
        .collect()
}

/// An RFC 3339 time (`2024-05-01T12:00:00Z`).
fn time(pointer: &str, text: &str) -> Result<Timestamp, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|e| {
            ApiError::bad_request(
                pointer,
                format!("{text:?} is not an RFC 3339 time such as 2024-05-01T12:00:00Z: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServerLimits {
        crate::config::Config::from_raw(std::path::Path::new("t"), Default::default())
            .unwrap()
            .limits
    }

    fn pointer(result: Result<RunSearch, ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest { errors, .. }) => errors[0].pointer.clone(),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn every_filter_is_read_and_statuses_add_up() {
        let q = "status=failed,WAITING_APPROVAL&status=CANCELED&workflow_id=w&workflow_version=2\
                 &created_after=2024-05-01T00:00:00Z&created_before=2024-05-02T00:00:00%2B02:00\
                 &trigger=schedule&context.customer=acme&context.order.id=42&view=summary&limit=5";
        let s = parse(q, &limits(), true).unwrap();
        let f = &s.filter;
        assert_eq!(
            f.statuses,
            vec![
                RunStatus::Failed,
                RunStatus::WaitingApproval,
                RunStatus::Canceled
            ]
        );
        assert_eq!(f.workflow_id.as_deref(), Some("w"));
        assert_eq!(f.workflow_version, Some(2));
        assert_eq!(
            f.created_before.unwrap().to_rfc3339(),
            "2024-05-01T22:00:00+00:00"
        );
        assert_eq!(f.trigger.as_deref(), Some("schedule"));
        assert_eq!(f.context[1].path, vec!["order", "id"]);
        assert_eq!(f.context[1].values.len(), 2, "the string and the number");
        assert!(f.summary);
        assert_eq!(s.page.limit, 5);
    }

    #[test]
    fn bad_values_and_unknown_names_point_at_their_parameter() {
        let l = limits();
        assert_eq!(pointer(parse("status=DONE", &l, true)), "/status");
        assert_eq!(
            pointer(parse("created_after=yesterday", &l, true)),
            "/created_after"
        );
        assert_eq!(
            pointer(parse("workflow_version=0", &l, true)),
            "/workflow_version"
        );
        assert_eq!(pointer(parse("trigger=cron", &l, true)), "/trigger");
        assert_eq!(pointer(parse("view=tiny", &l, true)), "/view");
        assert_eq!(pointer(parse("statuss=FAILED", &l, true)), "/statuss");
        assert_eq!(pointer(parse("context.=x", &l, true)), "/context.");
        assert_eq!(
            pointer(parse("workflow_id=a&workflow_id=b", &l, true)),
            "/workflow_id"
        );
        assert_eq!(pointer(parse("limit=5", &l, false)), "/limit");
    }
}
