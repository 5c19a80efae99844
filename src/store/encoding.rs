//! How both stores encode what they keep: times as Unix milliseconds, closed enums and JSON
//! documents as text, list cursors as `<millis>:<id>`, and the status list of a guard.
//! One place, so that the two stores cannot drift apart in what they write or accept.

use crate::model::{Page, Run, Timestamp};

use super::{Guard, StoreError};

/// Unix milliseconds of a timestamp, as stored.
pub fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

/// A stored millisecond count as a timestamp.
pub fn from_ms(v: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(v).unwrap_or_default()
}

/// Decodes a closed-enum column.
pub fn parse<T: std::str::FromStr>(text: &str) -> Result<T, StoreError>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse()
        .map_err(|e: T::Err| StoreError::corrupt_by(format!("column value {text:?}"), e))
}

/// Decodes a JSON column.
pub fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::corrupt_by("a JSON column", e))
}

/// Encodes a JSON column.
pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serialising a model value (maps with string keys) cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// A cursor of lists ordered by `(created_at, id)` descending: `<millis>:<id>`.
pub fn split_cursor(cursor: &Option<String>) -> Result<Option<(i64, String)>, StoreError> {
    let Some(c) = cursor else { return Ok(None) };
    c.split_once(':')
        .and_then(|(t, id)| Some((t.parse().ok()?, id.to_owned())))
        .map(Some)
        .ok_or_else(|| StoreError::Invalid(format!("cursor {c:?} is not one this server gave out")))
}

/// A full-view page of runs stops once its runs' contexts and step outputs pass this many
/// bytes (at least one whole run), with `next_cursor` set: at the default limits one run may
/// hold ~128 MiB of step outputs, and a page up to 500 runs.
pub const LIST_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// [`page`] for runs read under [`LIST_PAGE_BYTES`]: when the bound `cut` the read, more
/// follow after the last run kept.
pub fn bounded_page(runs: Vec<Run>, cut: bool, limit: usize) -> Page<Run> {
    if cut && runs.len() <= limit {
        let next_cursor = runs.last().map(|r| r.id.clone());
        return Page {
            items: runs,
            next_cursor,
        };
    }
    page(runs, limit, |r| r.id.clone())
}

/// A page of at most `limit` items out of `items` (read with one extra to know whether
/// more follow), with the cursor of its last item when they do.
pub fn page<T>(mut items: Vec<T>, limit: usize, cursor_of: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_cursor }
}

/// ` AND status IN ('A','B')` for a guard's statuses, empty without them. Closed-enum
/// names only, so inlining them is safe and keeps one statement per set.
pub fn status_condition(guard: &Guard) -> String {
    match &guard.status_in {
        Some(statuses) => {
            let list: Vec<String> = statuses
                .iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            format!(" AND status IN ({})", list.join(","))
        }
        None => String::new(),
    }
}

/// Why a guarded update of run `run_id` matched no row, given the row as it is.
pub fn guard_conflict(
    run_id: &str,
    guard: &Guard,
    status: &str,
    rev: i64,
    owner: Option<&str>,
) -> StoreError {
    guard_refusal(run_id, guard, status, rev, owner).unwrap_or_else(|| {
        StoreError::Conflict(format!("run {run_id} did not match the expected state"))
    })
}

/// The conflict `guard` raises against run `run_id` as it is, naming the first condition
/// that fails; `None` when the guard holds.
pub fn guard_refusal(
    run_id: &str,
    guard: &Guard,
    status: &str,
    rev: i64,
    owner: Option<&str>,
) -> Option<StoreError> {
    let reason = if guard
        .status_in
        .as_ref()
        .is_some_and(|s| !s.iter().any(|s| s.as_str() == status))
    {
        format!("run {run_id} is {status}")
    } else if guard.owner.is_some() && guard.owner.as_deref() != owner {
        format!("run {run_id} is owned by another server")
    } else if guard.rev.is_some_and(|r| r as i64 != rev) {
        format!("run {run_id} changed concurrently")
    } else {
        return None;
    };
    Some(StoreError::Conflict(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunStatus;

    #[test]
    fn cursors_this_server_did_not_give_out_are_refused() {
        assert_eq!(split_cursor(&None).unwrap(), None);
        assert_eq!(
            split_cursor(&Some("1700000000000:wf_1".into())).unwrap(),
            Some((1_700_000_000_000, "wf_1".into()))
        );
        for bad in ["wf_1", "soon:wf_1"] {
            assert!(matches!(
                split_cursor(&Some(bad.into())),
                Err(StoreError::Invalid(_))
            ));
        }
    }

    #[test]
    fn a_page_has_a_cursor_only_when_more_items_follow() {
        let full = page(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(full.items, vec![1, 2]);
        assert_eq!(full.next_cursor.as_deref(), Some("2"));
        let last = page(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn a_refused_guard_names_the_first_condition_that_failed() {
        let guard = Guard {
            rev: Some(3),
            owner: Some("a".into()),
            status_in: Some(vec![RunStatus::Pending, RunStatus::Running]),
        };
        assert_eq!(
            status_condition(&guard),
            " AND status IN ('PENDING','RUNNING')"
        );
        assert_eq!(status_condition(&Guard::default()), "");
        let reason = |status: &str, rev: i64, owner: Option<&str>| match guard_conflict(
            "run_1", &guard, status, rev, owner,
        ) {
            StoreError::Conflict(reason) => reason,
            other => panic!("not a conflict: {other:?}"),
        };
        assert_eq!(reason("SUCCEEDED", 9, None), "run run_1 is SUCCEEDED");
        assert_eq!(
            reason("RUNNING", 9, Some("b")),
            "run run_1 is owned by another server"
        );
        assert_eq!(
            reason("RUNNING", 4, Some("a")),
            "run run_1 changed concurrently"
        );
        assert!(guard_refusal("run_1", &guard, "RUNNING", 3, Some("a")).is_none());
        assert!(guard_refusal("run_1", &guard, "PENDING", 4, Some("a")).is_some());
    }
}
