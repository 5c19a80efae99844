//! The outbox's filter keys: which events belong to a run, a workflow, an event type.
//!
//! Three indexes on `events` kept these keys up to date as each event was appended, and
//! cost a quarter of the WAL pages of a step: each step's events landed on the leaves of the
//! runs and types in flight, deep inside the trees. Instead, the writer indexes the events
//! appended since its last pass every [`EVERY`] ([`index_new`], the store's upkeep), as
//! posting lists: one `event_postings` row per key in the pass, holding the ids of the
//! pass's events with that key ([`encode`]), so a pass writes a row per run, workflow and
//! type it saw rather than three per event. `event_keys_done.upto` says up to which event
//! they are in. A filtered read ([`list`]) takes the events up to `upto` through a key's
//! postings and scans the ones above it, at most one pass's worth, directly; both in one
//! read transaction, so it sees one `upto` and the postings it covers.
//!
//! Deleting events ([`prune`], [`forget_runs`]) deletes a run's postings with its events,
//! and the postings of a workflow or type once every id in them is below the oldest event
//! left. Until then a posting may name deleted events: reads look events up by id and
//! check them against the filter, and ids are never reused (`AUTOINCREMENT`), so a stale
//! id is skipped, never mistaken for another event. An event's type is its `type` column,
//! or, for an event written before that column existed, its body's `type`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use crate::store::{EventFilter, StoreError, StoredEvent};

use super::collect;
use super::pool::unavailable;
use super::triggers::event_row;

/// How often the writer indexes the events appended since its last pass.
pub const EVERY: Duration = Duration::from_millis(200);

/// Most events one pass indexes (a backlog takes several passes, one per batch).
const PASS: i64 = 50_000;

/// Most ids in one posting: a key with more in one pass gets several.
const POSTING: usize = 4096;

const EVENT_COLUMNS: &str = "e.id, e.run_id, e.workflow_id, e.seq, e.body";

/// Writes the postings of the events appended since the last pass (at most [`PASS`]
/// events); false when there were none.
pub fn index_next(conn: &Connection) -> Result<bool, StoreError> {
    let upto = indexed_upto(conn)?;
    let mut postings: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut newest = None;
    {
        let mut st = conn
            .prepare_cached(
                "SELECT id, run_id, workflow_id, COALESCE(type, json_extract(body, '$.type')) \
                 FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(unavailable)?;
        let mut rows = st.query(params![upto, PASS]).map_err(unavailable)?;
        let mut key = String::new();
        let mut add = |key: &str, id: i64| match postings.get_mut(key) {
            Some(ids) => ids.push(id),
            None => {
                postings.insert(key.to_owned(), vec![id]);
            }
        };
        while let Some(row) = rows.next().map_err(unavailable)? {
            let id: i64 = row.get(0).map_err(unavailable)?;
            for (prefix, column) in [("r:", 1), ("w:", 2), ("t:", 3)] {
                let value = row.get_ref(column).map_err(unavailable)?;
                let Ok(text) = value.as_str() else {
                    continue;
                };
                key.clear();
                key.push_str(prefix);
                key.push_str(text);
                add(&key, id);
            }
            newest = Some(id);
        }
    }
    let Some(newest) = newest else {
        return Ok(false);
    };
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO event_postings (key, first_id, last_id, ids) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(unavailable)?;
    for (key, ids) in &postings {
        for part in ids.chunks(POSTING) {
            let (first, last) = (part[0], part[part.len() - 1]);
            insert
                .execute(params![key, first, last, encode(part)])
                .map_err(unavailable)?;
        }
    }
    conn.prepare_cached("UPDATE event_keys_done SET upto = ?1 WHERE id = 1")
        .and_then(|mut s| s.execute([newest]))
        .map_err(unavailable)?;
    Ok(true)
}

/// The writer's upkeep: one pass of [`index_next`].
pub fn index_new(conn: &Connection) -> Result<(), StoreError> {
    index_next(conn).map(drop)
}

/// Writes the postings of every event not yet covered, pass after pass (for a tool that
/// wrote events into a stopped store).
pub fn index_all(conn: &Connection) -> Result<(), StoreError> {
    while index_next(conn)? {}
    Ok(())
}

/// The newest event whose keys are in `event_postings`.
fn indexed_upto(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT upto FROM event_keys_done WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map(Option::unwrap_or_default)
        .map_err(unavailable)
}

/// Ascending ids as a posting's text: the first in full, each next as its difference to
/// the one before, separated by commas.
fn encode(ids: &[i64]) -> String {
    let mut text = String::with_capacity(ids.len() * 3 + 8);
    let mut before = 0;
    for &id in ids {
        if !text.is_empty() {
            text.push(',');
        }
        let _ = write!(text, "{}", id - before);
        before = id;
    }
    text
}

/// The ids of a posting's text, ascending; a posting that does not decode is an error,
/// not a shorter list.
fn decode(text: &str) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(text.len() / 2 + 1);
    let mut id: i64 = 0;
    for part in text.split(',') {
        let delta: i64 = part.parse().map_err(|e| {
            StoreError::corrupt_by(format!("an event posting's ids ({text:.64})"), e)
        })?;
        id = match id.checked_add(delta) {
            Some(next) if delta > 0 || ids.is_empty() => next,
            _ => {
                return Err(StoreError::Corrupt {
                    what: format!("an event posting's ids are not ascending ({text:.64})"),
                    cause: None,
                });
            }
        };
        ids.push(id);
    }
    Ok(ids)
}

/// The ids of the posting in column 0 of `row`.
fn posting_ids(row: &rusqlite::Row<'_>) -> Result<Vec<i64>, StoreError> {
    let text = row.get_ref(0).map_err(unavailable)?;
    let text = text
        .as_str()
        .map_err(|e| StoreError::corrupt_by("an event posting's ids", e))?;
    decode(text)
}

/// Events after `after` that pass `filter`, in outbox order (newest first when the filter
/// says so), at most `limit`.
pub fn list(
    conn: &Connection,
    filter: &EventFilter,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let after = after.min(i64::MAX as u64) as i64;
    let keys: Vec<String> = match (&filter.run_id, &filter.workflow_id) {
        (Some(run), _) => vec![format!("r:{run}")],
        (None, Some(workflow)) => vec![format!("w:{workflow}")],
        (None, None) => {
            let types: std::collections::BTreeSet<&String> = filter.types.iter().collect();
            types.into_iter().map(|t| format!("t:{t}")).collect()
        }
    };
    if keys.is_empty() || limit == 0 {
        return scan(conn, filter, after, limit);
    }
    let upto = indexed_upto(conn)?;
    let by_keys = |conn: &Connection| -> Result<Vec<StoredEvent>, StoreError> {
        let mut found = Vec::new();
        for key in &keys {
            found.extend(through_key(conn, key, filter, after, upto, limit)?);
        }
        if filter.newest_first {
            found.sort_unstable_by_key(|e| std::cmp::Reverse(e.id));
        } else {
            found.sort_unstable_by_key(|e| e.id);
        }
        found.truncate(limit);
        Ok(found)
    };
    let above = after.max(upto);
    // The keyed events are all at or below `upto`, the scanned ones above it.
    let (first, second) = if filter.newest_first {
        let first = scan(conn, filter, above, limit)?;
        let rest = limit - first.len();
        let second = if rest > 0 { by_keys(conn)? } else { Vec::new() };
        (first, second)
    } else {
        let first = by_keys(conn)?;
        let rest = limit - first.len();
        let second = if rest > 0 {
            scan(conn, filter, above, rest)?
        } else {
            Vec::new()
        };
        (first, second)
    };
    let mut events = first;
    events.extend(second);
    events.truncate(limit);
    Ok(events)
}

/// The events with key `key` after `after` and up to `upto` that pass `filter`, at most
/// `limit`, in the filter's order: their ids from the key's postings, each looked up in
/// `events` and checked against the filter there (a posting may name deleted events; with
/// a type key, the types are the filter's only other condition).
fn through_key(
    conn: &Connection,
    key: &str,
    filter: &EventFilter,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let before = filter
        .before
        .map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64)
        .min(upto.saturating_add(1));
    if before <= after.saturating_add(1) {
        return Ok(Vec::new());
    }
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ?1");
    let mut args = vec![SqlValue::Null];
    conditions(&mut sql, &mut args, filter);
    let mut lookup = conn.prepare_cached(&sql).map_err(unavailable)?;
    let mut found = Vec::new();
    // Looks `id` up; true once `limit` events are found.
    let mut take = |id: i64, found: &mut Vec<StoredEvent>| -> Result<bool, StoreError> {
        args[0] = SqlValue::Integer(id);
        let event = lookup
            .query_row(params_from_iter(args.iter()), event_row)
            .optional()
            .map_err(unavailable)?;
        if let Some(event) = event {
            found.push(event?);
        }
        Ok(found.len() >= limit)
    };
    if filter.newest_first {
        // The first posting reaching `before` holds the newest ids below it; none after it
        // holds any.
        let cap: Option<i64> = conn
            .prepare_cached(
                "SELECT MIN(last_id) FROM event_postings WHERE key = ?1 AND last_id >= ?2",
            )
            .and_then(|mut s| s.query_row(params![key, before], |r| r.get(0)))
            .map_err(unavailable)?;
        let mut st = conn
            .prepare_cached(
                "SELECT ids FROM event_postings WHERE key = ?1 AND last_id > ?2 AND last_id <= ?3 \
                 ORDER BY last_id DESC",
            )
            .map_err(unavailable)?;
        let mut rows = st
            .query(params![key, after, cap.unwrap_or(i64::MAX)])
            .map_err(unavailable)?;
        while let Some(row) = rows.next().map_err(unavailable)? {
            let ids = posting_ids(row)?;
            let typed = typed_ids(conn, key, filter, &ids)?;
            for &id in ids.iter().rev() {
                if id <= after {
                    return Ok(found);
                }
                let wanted = typed.as_ref().is_none_or(|t| t.binary_search(&id).is_ok());
                if id < before && wanted && take(id, &mut found)? {
                    return Ok(found);
                }
            }
        }
    } else {
        let mut st = conn
            .prepare_cached(
                "SELECT ids FROM event_postings WHERE key = ?1 AND last_id > ?2 AND first_id < ?3 \
                 ORDER BY last_id",
            )
            .map_err(unavailable)?;
        let mut rows = st.query(params![key, after, before]).map_err(unavailable)?;
        while let Some(row) = rows.next().map_err(unavailable)? {
            let ids = posting_ids(row)?;
            let typed = typed_ids(conn, key, filter, &ids)?;
            for id in ids {
                if id >= before {
                    return Ok(found);
                }
                let wanted = typed.as_ref().is_none_or(|t| t.binary_search(&id).is_ok());
                if id > after && wanted && take(id, &mut found)? {
                    return Ok(found);
                }
            }
        }
    }
    Ok(found)
}

/// Fewest ids in a workflow's posting for which [`typed_ids`] reads the types' postings
/// over its range: a lookup costs about as much as decoding a hundred ids, and a sparse
/// workflow's posting may span a busy type's posting of thousands.
const TYPED_FROM: usize = 32;

/// For a workflow's posting `ids` (of at least [`TYPED_FROM`]) and a filter with types: the
/// ids of those types in the posting's range, sorted, from the types' own postings, so
/// that the workflow's events of other types are skipped without being looked up. `None`:
/// every id is looked up.
fn typed_ids(
    conn: &Connection,
    key: &str,
    filter: &EventFilter,
    ids: &[i64],
) -> Result<Option<Vec<i64>>, StoreError> {
    let (Some(&low), Some(&high)) = (ids.first(), ids.last()) else {
        return Ok(None);
    };
    if !key.starts_with("w:") || filter.types.is_empty() || ids.len() < TYPED_FROM {
        return Ok(None);
    }
    let mut st = conn
        .prepare_cached(
            "SELECT ids, first_id FROM event_postings WHERE key = ?1 AND last_id >= ?2 \
             ORDER BY last_id",
        )
        .map_err(unavailable)?;
    let mut typed = Vec::new();
    for kind in &filter.types {
        let mut rows = st
            .query(params![format!("t:{kind}"), low])
            .map_err(unavailable)?;
        while let Some(row) = rows.next().map_err(unavailable)? {
            let first: i64 = row.get(1).map_err(unavailable)?;
            if first > high {
                break;
            }
            typed.extend(
                posting_ids(row)?
                    .into_iter()
                    .filter(|id| (low..=high).contains(id)),
            );
        }
    }
    typed.sort_unstable();
    Ok(Some(typed))
}

/// The events after `after` that pass `filter`, read in outbox order: for a filter
/// without keys, and for the events above `upto`.
fn scan(
    conn: &Connection,
    filter: &EventFilter,
    after: i64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id > ?1");
    let mut args = vec![SqlValue::Integer(after)];
    if let Some(before) = filter.before {
        args.push(SqlValue::Integer(before.min(i64::MAX as u64) as i64));
        sql.push_str(&format!(" AND e.id < ?{}", args.len()));
    }
    conditions(&mut sql, &mut args, filter);
    let order = if filter.newest_first { "DESC" } else { "ASC" };
    args.push(SqlValue::Integer(limit as i64));
    sql.push_str(&format!(" ORDER BY e.id {order} LIMIT ?{}", args.len()));
    query(conn, &sql, args)
}

/// Appends the run, workflow and type conditions of `filter` on `events e`.
fn conditions(sql: &mut String, args: &mut Vec<SqlValue>, filter: &EventFilter) {
    if let Some(run) = &filter.run_id {
        args.push(SqlValue::Text(run.clone()));
        sql.push_str(&format!(" AND e.run_id = ?{}", args.len()));
    }
    if let Some(workflow) = &filter.workflow_id {
        args.push(SqlValue::Text(workflow.clone()));
        sql.push_str(&format!(" AND e.workflow_id = ?{}", args.len()));
    }
    if !filter.types.is_empty() {
        let mut marks = Vec::with_capacity(filter.types.len());
        for kind in &filter.types {
            args.push(SqlValue::Text(kind.clone()));
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(
            " AND COALESCE(e.type, json_extract(e.body, '$.type')) IN ({})",
            marks.join(", ")
        ));
    }
}

fn query(
    conn: &Connection,
    sql: &str,
    args: Vec<SqlValue>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut st = conn.prepare_cached(sql).map_err(unavailable)?;
    let rows = st
        .query_map(params_from_iter(args), event_row)
        .map_err(unavailable)?;
    collect(rows)
}

/// Deletes, with their postings, the oldest acknowledged events (ids up to `acked`, at
/// most `limit` of the oldest) that happened before `before` (milliseconds); returns how
/// many. Events are appended in time order, so the old ones are a prefix; looking only
/// there keeps a pass from reading the whole outbox when nothing is old enough yet.
pub fn prune(conn: &Connection, acked: u64, before: i64, limit: usize) -> Result<u64, StoreError> {
    let doomed = doomed(
        conn,
        "SELECT id, run_id, workflow_id, COALESCE(type, json_extract(body, '$.type')) FROM events \
         WHERE id IN (SELECT id FROM events WHERE id <= ?1 ORDER BY id LIMIT ?3) \
         AND created_at < ?2",
        params![acked.min(i64::MAX as u64) as i64, before, limit as i64],
    )?;
    forget(conn, &doomed, &[])
}

/// Deletes every event of runs `run_ids`, with their postings.
pub fn forget_runs(conn: &Connection, run_ids: &[String]) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for run_id in run_ids {
        let key = format!("r:{run_id}");
        let mut ids = Vec::new();
        {
            let mut st = conn
                .prepare_cached("SELECT ids FROM event_postings WHERE key = ?1")
                .map_err(unavailable)?;
            let mut rows = st.query([&key]).map_err(unavailable)?;
            while let Some(row) = rows.next().map_err(unavailable)? {
                ids.extend(posting_ids(row)?);
            }
        }
        let ids = serde_json::to_string(&ids)
            .map_err(|e| StoreError::corrupt_by("the ids of a run's events", e))?;
        let doomed = doomed(
            conn,
            "SELECT id, run_id, workflow_id, COALESCE(type, json_extract(body, '$.type')) \
             FROM events WHERE id IN (SELECT value FROM json_each(?1)) AND run_id = ?2 \
             UNION ALL \
             SELECT id, run_id, workflow_id, COALESCE(type, json_extract(body, '$.type')) FROM events \
             WHERE id > (SELECT COALESCE(MAX(upto), 0) FROM event_keys_done) AND run_id = ?2",
            params![ids, run_id],
        )?;
        deleted += forget(conn, &doomed, std::slice::from_ref(&key))?;
    }
    Ok(deleted)
}

/// An event to delete, with what its keys are made of.
struct Doomed {
    id: i64,
    run_id: String,
    workflow_id: String,
    kind: Option<String>,
}

fn doomed(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Doomed>, StoreError> {
    let mut st = conn.prepare_cached(sql).map_err(unavailable)?;
    let rows = st
        .query_map(args, |r| {
            Ok(Doomed {
                id: r.get(0)?,
                run_id: r.get(1)?,
                workflow_id: r.get(2)?,
                kind: r.get(3)?,
            })
        })
        .map_err(unavailable)?;
    rows.collect::<Result<_, _>>().map_err(unavailable)
}

/// Deletes `doomed` events, every posting of keys `gone` (runs whose events are all
/// doomed), and the postings of the doomed events' keys that hold only ids below the
/// oldest event left (all deleted: events are deleted oldest first or by run).
fn forget(conn: &Connection, doomed: &[Doomed], gone: &[String]) -> Result<u64, StoreError> {
    if doomed.is_empty() && gone.is_empty() {
        return Ok(0);
    }
    let mut event = conn
        .prepare_cached("DELETE FROM events WHERE id = ?1")
        .map_err(unavailable)?;
    let mut keys = std::collections::BTreeSet::new();
    for d in doomed {
        event.execute([d.id]).map_err(unavailable)?;
        keys.insert(format!("r:{}", d.run_id));
        keys.insert(format!("w:{}", d.workflow_id));
        if let Some(kind) = &d.kind {
            keys.insert(format!("t:{kind}"));
        }
    }
    let mut whole = conn
        .prepare_cached("DELETE FROM event_postings WHERE key = ?1")
        .map_err(unavailable)?;
    for key in gone {
        whole.execute([key]).map_err(unavailable)?;
        keys.remove(key);
    }
    let oldest: Option<i64> = conn
        .prepare_cached("SELECT MIN(id) FROM events")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(unavailable)?;
    let mut below = conn
        .prepare_cached("DELETE FROM event_postings WHERE key = ?1 AND last_id < ?2")
        .map_err(unavailable)?;
    for key in &keys {
        below
            .execute(params![key, oldest.unwrap_or(i64::MAX)])
            .map_err(unavailable)?;
    }
    Ok(doomed.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store's schema in memory with `n` events: run `r{i % 3}`, workflow `w{i % 2}`,
    /// type `a` for even ids and `b` for odd ones.
    fn outbox(n: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        super::super::pool::plan_stably(&conn).unwrap();
        super::super::migrate(&conn).unwrap();
        append(&conn, 1..=n);
        conn
    }

    fn append(conn: &Connection, ids: std::ops::RangeInclusive<i64>) {
        append_as(conn, ids, true);
    }

    /// Appends events `ids`; with `typed` false, as a store did before events had a `type`
    /// column (which it may not have yet).
    fn append_as(conn: &Connection, ids: std::ops::RangeInclusive<i64>, typed: bool) {
        for i in ids {
            let kind = if i % 2 == 0 { "a" } else { "b" };
            let body = format!(
                r#"{{"type":"{kind}","run_id":"r{}","workflow_id":"w{}","status":"RUNNING","ts":"2026-12-01T00:00:00Z"}}"#,
                i % 3,
                i % 2
            );
            let (run, workflow) = (format!("r{}", i % 3), format!("w{}", i % 2));
            // Every fifth event as written before events had a `type` column.
            if typed && i % 5 != 0 {
                conn.execute(
                    "INSERT INTO events (id, run_id, workflow_id, seq, body, created_at, type) \
                     VALUES (?1, ?2, ?3, ?1, ?4, ?1, ?5)",
                    params![i, run, workflow, body, kind],
                )
            } else {
                conn.execute(
                    "INSERT INTO events (id, run_id, workflow_id, seq, body, created_at) \
                     VALUES (?1, ?2, ?3, ?1, ?4, ?1)",
                    params![i, run, workflow, body],
                )
            }
            .unwrap();
        }
    }

    fn ids(events: &[StoredEvent]) -> Vec<u64> {
        events.iter().map(|e| e.id).collect()
    }

    /// What `filter` selects from ids `1..=n` of [`outbox`], worked out by hand.
    fn expected(n: u64, filter: &EventFilter, after: u64, limit: usize) -> Vec<u64> {
        let mut all: Vec<u64> = (1..=n)
            .filter(|&i| i > after && filter.before.is_none_or(|b| i < b))
            .filter(|&i| {
                filter
                    .run_id
                    .as_ref()
                    .is_none_or(|r| *r == format!("r{}", i % 3))
            })
            .filter(|&i| {
                filter
                    .workflow_id
                    .as_ref()
                    .is_none_or(|w| *w == format!("w{}", i % 2))
            })
            .filter(|&i| {
                let kind = if i % 2 == 0 { "a" } else { "b" };
                filter.types.is_empty() || filter.types.iter().any(|t| t == kind)
            })
            .collect();
        if filter.newest_first {
            all.reverse();
        }
        all.truncate(limit);
        all
    }

    /// Requires `list` to answer as [`expected`] over ids `1..=n` for every filter, `after`
    /// and `limit` given.
    fn reads_as_expected(
        conn: &Connection,
        n: u64,
        filters: impl IntoIterator<Item = EventFilter>,
        afters: &[u64],
        limits: &[usize],
    ) {
        for filter in filters {
            for &after in afters {
                for &limit in limits {
                    assert_eq!(
                        ids(&list(conn, &filter, after, limit).unwrap()),
                        expected(n, &filter, after, limit),
                        "{filter:?} after {after} limit {limit}"
                    );
                }
            }
        }
    }

    /// A store in memory at the schema version before the first migration containing
    /// `marker`.
    fn store_before(marker: &str) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        let version = (super::super::MIGRATIONS.iter())
            .position(|sql| sql.contains(marker))
            .unwrap();
        for sql in &super::super::MIGRATIONS[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(&format!("PRAGMA user_version = {version}"))
            .unwrap();
        conn
    }

    fn filters() -> Vec<EventFilter> {
        let mut out = Vec::new();
        for run in [None, Some("r1".to_owned())] {
            for workflow in [None, Some("w0".to_owned())] {
                for types in [
                    vec![],
                    vec!["a".to_owned()],
                    vec!["a".to_owned(), "b".to_owned()],
                ] {
                    for before in [None, Some(40)] {
                        for newest_first in [false, true] {
                            out.push(EventFilter {
                                run_id: run.clone(),
                                workflow_id: workflow.clone(),
                                types: types.clone(),
                                before,
                                newest_first,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_filtered_read_is_the_same_through_the_keys_above_them_and_across_them() {
        let conn = outbox(30);
        index_new(&conn).unwrap();
        append(&conn, 31..=50);
        assert_eq!(indexed_upto(&conn).unwrap(), 30);
        reads_as_expected(&conn, 50, filters(), &[0, 10, 29, 30, 45], &[1, 3, 100]);
    }

    /// Every id the postings of `key` hold, in posting order.
    fn posted(conn: &Connection, key: &str) -> Vec<i64> {
        let mut st = conn
            .prepare("SELECT ids FROM event_postings WHERE key = ?1 ORDER BY last_id")
            .unwrap();
        let mut rows = st.query([key]).unwrap();
        let mut ids = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            ids.extend(posting_ids(row).unwrap());
        }
        ids
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// The filters of [`filters`], and each again with `before` inside the indexed ids.
    fn filters_before_inside() -> Vec<EventFilter> {
        let mut out = filters();
        for filter in filters().into_iter().filter(|f| f.before.is_none()) {
            for before in [7, 17] {
                out.push(EventFilter {
                    before: Some(before),
                    ..filter.clone()
                });
            }
        }
        out
    }

    #[test]
    fn a_filtered_read_through_many_postings_is_the_same_as_through_one() {
        let conn = outbox(0);
        for first in (1..=28).step_by(4) {
            append(&conn, first..=first + 3);
            index_new(&conn).unwrap();
        }
        append(&conn, 29..=50);
        assert_eq!(indexed_upto(&conn).unwrap(), 28);
        reads_as_expected(
            &conn,
            50,
            filters_before_inside(),
            &[0, 3, 4, 10, 28, 45],
            &[1, 2, 5, 100],
        );
    }

    #[test]
    fn a_workflows_read_with_types_is_the_same_through_large_and_small_postings() {
        // 1..=300 in one pass (postings of 100 and more ids), 301..=330 in passes of 3.
        let conn = outbox(300);
        index_new(&conn).unwrap();
        for first in (301..=330).step_by(3) {
            append(&conn, first..=first + 2);
            index_new(&conn).unwrap();
        }
        append(&conn, 331..=340);
        assert!(posted(&conn, "w:w0").len() > 2 * TYPED_FROM);
        let filters = filters_before_inside()
            .into_iter()
            .filter(|f| f.workflow_id.is_some() && f.run_id.is_none())
            .flat_map(|f| {
                let late = EventFilter {
                    before: f.before.map(|_| 320),
                    ..f.clone()
                };
                [f, late]
            });
        reads_as_expected(
            &conn,
            340,
            filters,
            &[0, 150, 299, 300, 310, 335],
            &[3, 100, 400],
        );
    }

    #[test]
    fn a_store_with_keys_row_by_row_reads_the_same_through_their_postings() {
        let conn = store_before("CREATE TABLE event_postings");
        // Keys as the row-per-key pass wrote them, for more ids than one posting takes.
        let n = POSTING as i64 + 500;
        append(&conn, 1..=n);
        conn.execute_batch(
            "INSERT INTO event_keys (key, id) SELECT key, id FROM ( \
               SELECT 'r:' || run_id AS key, id FROM events \
               UNION ALL SELECT 'w:' || workflow_id, id FROM events \
               UNION ALL SELECT 't:' || COALESCE(type, json_extract(body, '$.type')), id FROM events) \
             WHERE id <= 4500 ORDER BY key, id; \
             UPDATE event_keys_done SET upto = 4500;",
        )
        .unwrap();
        super::super::migrate(&conn).unwrap();
        assert_eq!(indexed_upto(&conn).unwrap(), 4500);
        assert_eq!(
            posted(&conn, "r:r1"),
            (1..=4500).filter(|i| i % 3 == 1).collect::<Vec<_>>()
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM event_postings WHERE key = 'r:r1'"
            ),
            2,
            "ids below 4,096 and above"
        );
        reads_as_expected(
            &conn,
            n as u64,
            filters_before_inside(),
            &[0, 4090, 4499],
            &[9],
        );
    }

    #[test]
    fn a_pass_indexes_what_was_appended_since_the_last_one() {
        let conn = outbox(5);
        index_new(&conn).unwrap();
        index_new(&conn).unwrap();
        append(&conn, 6..=7);
        index_new(&conn).unwrap();
        assert_eq!(indexed_upto(&conn).unwrap(), 7);
        // 1..=5: three runs, two workflows, two types; 6..=7: two of each.
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM event_postings"), 7 + 6);
        assert_eq!(posted(&conn, "r:r1"), [1, 4, 7]);
        assert_eq!(posted(&conn, "w:w1"), [1, 3, 5, 7]);
        assert_eq!(posted(&conn, "t:a"), [2, 4, 6]);
    }

    #[test]
    fn a_key_with_more_ids_in_a_pass_than_a_posting_holds_gets_several() {
        let n = POSTING as i64 * 2 + 10;
        let conn = outbox(n);
        index_new(&conn).unwrap();
        // Workflow w0 has the even ids: n / 2 of them.
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM event_postings WHERE key = 'w:w0'"
            ),
            2
        );
        assert_eq!(
            posted(&conn, "w:w0"),
            (1..=n).filter(|i| i % 2 == 0).collect::<Vec<_>>()
        );
        let filter = EventFilter {
            workflow_id: Some("w0".into()),
            ..EventFilter::default()
        };
        let afters = [0, POSTING as u64 * 2 - 3, POSTING as u64 * 2 + 1];
        reads_as_expected(&conn, n as u64, [filter], &afters, &[7]);
    }

    #[test]
    fn postings_are_ascending_ids_as_differences_and_a_broken_one_is_an_error() {
        assert_eq!(encode(&[1200, 1203, 1204, 1211]), "1200,3,1,7");
        assert_eq!(encode(&[7]), "7");
        for ids in [vec![1], vec![5, 6, 7], vec![1, 1_000_000, i64::MAX]] {
            assert_eq!(decode(&encode(&ids)).unwrap(), ids);
        }
        for broken in [
            "",
            "1,,2",
            "1,x",
            "5,0",
            "5,-1",
            "9223372036854775807,1",
            "1, 2",
        ] {
            assert!(
                matches!(decode(broken), Err(StoreError::Corrupt { .. })),
                "{broken:?}"
            );
        }
    }

    #[test]
    fn deleting_a_runs_events_or_pruning_old_ones_takes_their_postings_too() {
        let conn = outbox(20);
        index_new(&conn).unwrap();
        append(&conn, 21..=24);
        // r1: 1, 4, …, 19 indexed; 22 not yet.
        assert_eq!(forget_runs(&conn, &["r1".to_owned()]).unwrap(), 8);
        assert!(posted(&conn, "r:r1").is_empty());
        let run = EventFilter {
            run_id: Some("r1".into()),
            ..EventFilter::default()
        };
        assert!(list(&conn, &run, 0, 100).unwrap().is_empty());
        // The workflows' and types' postings still name r1's events; reads skip them.
        let left = |filter: &EventFilter, from: u64| -> Vec<u64> {
            let mut all: Vec<u64> = (1..=24)
                .filter(|i| i % 3 != 1 && *i >= from)
                .filter(|&i| {
                    filter
                        .workflow_id
                        .as_ref()
                        .is_none_or(|w| *w == format!("w{}", i % 2))
                })
                .filter(|&i| {
                    let kind = if i % 2 == 0 { "a" } else { "b" };
                    filter.types.is_empty() || filter.types.iter().any(|t| t == kind)
                })
                .collect();
            if filter.newest_first {
                all.reverse();
            }
            all
        };
        for filter in filters().into_iter().filter(|f| f.run_id.is_none()) {
            let filter = EventFilter {
                before: None,
                ..filter
            };
            assert_eq!(
                ids(&list(&conn, &filter, 0, 100).unwrap()),
                left(&filter, 0),
                "{filter:?}"
            );
        }
        // Acknowledged up to 10, created (here: at their id, in ms) before 8.
        assert_eq!(
            prune(&conn, 10, 8, 100).unwrap(),
            4,
            "2, 3, 5, 6 (7 went with r1)"
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM event_postings WHERE last_id < (SELECT MIN(id) FROM events)"
            ),
            0,
            "no posting holds only deleted events below the oldest left"
        );
        index_new(&conn).unwrap();
        for filter in filters().into_iter().filter(|f| f.run_id.is_none()) {
            let filter = EventFilter {
                before: None,
                ..filter
            };
            assert_eq!(
                ids(&list(&conn, &filter, 0, 100).unwrap()),
                left(&filter, 8),
                "{filter:?}"
            );
        }
        assert!(forget_runs(&conn, &["r0".to_owned(), "r2".to_owned()]).unwrap() > 0);
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM event_postings"),
            0,
            "with every event gone, every posting is"
        );
    }

    #[test]
    fn a_store_from_before_the_keys_gets_them_for_every_event_it_holds() {
        let conn = store_before("CREATE TABLE event_keys");
        append_as(&conn, 1..=9, false);
        super::super::migrate(&conn).unwrap();
        assert_eq!(indexed_upto(&conn).unwrap(), 9);
        let filter = EventFilter {
            workflow_id: Some("w1".into()),
            types: vec!["b".into()],
            ..EventFilter::default()
        };
        assert_eq!(ids(&list(&conn, &filter, 0, 100).unwrap()), [1, 3, 5, 7, 9]);
        let indexes: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0, "the outbox is appended to alone");
    }

    #[tokio::test]
    async fn the_stores_writer_indexes_new_events_as_its_upkeep() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::SqliteStore::open(&dir.path().join("s.db"), false, 1).unwrap();
        let upto = || async { store.readers.read(indexed_upto).await.unwrap() };
        store
            .writer
            .write(|c| {
                append(c, 1..=3);
                Ok(())
            })
            .await
            .unwrap();
        tokio::time::sleep(EVERY * 2).await;
        assert_eq!(upto().await, 0, "an idle writer leaves the keys for later");
        // The next write's batch starts with the upkeep, which covers what was there.
        store
            .writer
            .write(|c| {
                append(c, 4..=4);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(upto().await, 3);
    }

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let params = vec![0; st.parameter_count()];
        let rows = st
            .query_map(params_from_iter(params), |r| r.get::<_, String>(3))
            .unwrap();
        rows.collect::<Result<Vec<_>, _>>().unwrap().join("; ")
    }

    #[test]
    fn a_keyed_read_seeks_its_key_and_reads_events_by_id() {
        let conn = outbox(1);
        let plan = plan(
            &conn,
            "SELECT ids FROM event_postings WHERE key = ?1 AND last_id > ?2 AND first_id < ?3 \
             ORDER BY last_id",
        );
        assert!(
            plan.contains(
                "SEARCH event_postings USING INDEX event_postings_by_key (key=? AND last_id>?)"
            ),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        let plan = self::plan(
            &conn,
            "SELECT ids FROM event_postings WHERE key = ?1 AND last_id > ?2 AND last_id <= ?3 \
             ORDER BY last_id DESC",
        );
        assert!(
            plan.contains("SEARCH event_postings USING INDEX event_postings_by_key (key=? AND last_id>? AND last_id<?)"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        let plan = self::plan(
            &conn,
            &format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ?1 AND e.run_id = ?2"),
        );
        assert!(
            plan.contains("SEARCH e USING INTEGER PRIMARY KEY (rowid=?)"),
            "{plan}"
        );
    }
}
