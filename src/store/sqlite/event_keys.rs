//! The outbox's filter keys: which events belong to a run, a workflow, an event type.
//!
//! Three indexes on `events` kept these keys up to date as each event was appended, and
//! cost a quarter of the WAL pages of a step: each step's events landed on the leaves of the
//! runs and types in flight, deep inside the trees. Instead, the writer copies the keys of
//! new events into `event_keys` in sorted batches every [`EVERY`] ([`index_new`], the
//! store's upkeep), and `event_keys_done.upto` says up to which event they are in. A
//! filtered read ([`list`]) takes the events up to `upto` through the keys and scans the
//! ones above it, at most one batch's worth, directly; both in one read transaction, so it
//! sees one `upto` and the events it covers. Deleting events ([`prune`],
//! [`forget_runs`]) deletes their keys with them. An event's type is its `type` column,
//! or, for an event written before that column existed, its body's `type`.

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

const EVENT_COLUMNS: &str = "e.id, e.run_id, e.workflow_id, e.seq, e.body";

/// Copies the keys of the events appended since the last pass into `event_keys` (at most
/// [`PASS`] events); false when there were none.
pub fn index_next(conn: &Connection) -> Result<bool, StoreError> {
    let upto = indexed_upto(conn)?;
    let newest: Option<i64> = conn
        .prepare_cached(
            "SELECT MAX(id) FROM (SELECT id FROM events WHERE id > ?1 ORDER BY id LIMIT ?2)",
        )
        .and_then(|mut s| s.query_row(params![upto, PASS], |r| r.get(0)))
        .map_err(unavailable)?;
    let Some(newest) = newest else {
        return Ok(false);
    };
    conn.prepare_cached(
        "INSERT OR IGNORE INTO event_keys (key, id) \
         SELECT key, id FROM ( \
           SELECT 'r:' || run_id AS key, id FROM events WHERE id > ?1 AND id <= ?2 \
           UNION ALL SELECT 'w:' || workflow_id, id FROM events WHERE id > ?1 AND id <= ?2 \
           UNION ALL SELECT 't:' || COALESCE(type, json_extract(body, '$.type')), id FROM events \
             WHERE id > ?1 AND id <= ?2) \
         ORDER BY key, id",
    )
    .and_then(|mut s| s.execute(params![upto, newest]))
    .map_err(unavailable)?;
    conn.prepare_cached("UPDATE event_keys_done SET upto = ?1 WHERE id = 1")
        .and_then(|mut s| s.execute([newest]))
        .map_err(unavailable)?;
    Ok(true)
}

/// The writer's upkeep: one pass of [`index_next`].
pub fn index_new(conn: &Connection) -> Result<(), StoreError> {
    index_next(conn).map(drop)
}

/// Writes the keys of every event not yet covered, pass after pass (for a tool that wrote
/// events into a stopped store).
pub fn index_all(conn: &Connection) -> Result<(), StoreError> {
    while index_next(conn)? {}
    Ok(())
}

/// The newest event whose keys are in `event_keys`.
fn indexed_upto(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT upto FROM event_keys_done WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map(Option::unwrap_or_default)
        .map_err(unavailable)
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
    if keys.is_empty() {
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

/// The events with key `key` after `after` and up to `upto` that pass `filter` (a type
/// key is the filter's only condition: it is used when no run or workflow is asked for).
fn through_key(
    conn: &Connection,
    key: &str,
    filter: &EventFilter,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut sql = format!(
        "SELECT {EVENT_COLUMNS} FROM event_keys k JOIN events e ON e.id = k.id \
         WHERE k.key = ?1 AND k.id > ?2 AND k.id <= ?3"
    );
    let mut args = vec![
        SqlValue::Text(key.to_owned()),
        SqlValue::Integer(after),
        SqlValue::Integer(upto),
    ];
    if let Some(before) = filter.before {
        args.push(SqlValue::Integer(before.min(i64::MAX as u64) as i64));
        sql.push_str(&format!(" AND k.id < ?{}", args.len()));
    }
    if !key.starts_with("t:") {
        conditions(&mut sql, &mut args, filter);
    }
    let order = if filter.newest_first { "DESC" } else { "ASC" };
    args.push(SqlValue::Integer(limit as i64));
    sql.push_str(&format!(" ORDER BY k.id {order} LIMIT ?{}", args.len()));
    query(conn, &sql, args)
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

/// Deletes, with their keys, the oldest acknowledged events (ids up to `acked`, at most
/// `limit` of the oldest) that happened before `before` (milliseconds); returns how many.
/// Events are appended in time order, so the old ones are a prefix; looking only there
/// keeps a pass from reading the whole outbox when nothing is old enough yet.
pub fn prune(conn: &Connection, acked: u64, before: i64, limit: usize) -> Result<u64, StoreError> {
    let doomed = doomed(
        conn,
        "SELECT id, run_id, workflow_id, COALESCE(type, json_extract(body, '$.type')) FROM events \
         WHERE id IN (SELECT id FROM events WHERE id <= ?1 ORDER BY id LIMIT ?3) \
         AND created_at < ?2",
        params![acked.min(i64::MAX as u64) as i64, before, limit as i64],
    )?;
    forget(conn, &doomed)
}

/// Deletes every event of runs `run_ids`, with their keys.
pub fn forget_runs(conn: &Connection, run_ids: &[String]) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for run_id in run_ids {
        let doomed = doomed(
            conn,
            "SELECT e.id, e.run_id, e.workflow_id, COALESCE(e.type, json_extract(e.body, '$.type')) \
             FROM event_keys k JOIN events e ON e.id = k.id WHERE k.key = 'r:' || ?1 \
             UNION ALL \
             SELECT id, run_id, workflow_id, COALESCE(type, json_extract(body, '$.type')) FROM events \
             WHERE id > (SELECT COALESCE(MAX(upto), 0) FROM event_keys_done) AND run_id = ?1",
            params![run_id],
        )?;
        deleted += forget(conn, &doomed)?;
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

/// Deletes `doomed` events and their keys (keys not yet written are simply not there).
fn forget(conn: &Connection, doomed: &[Doomed]) -> Result<u64, StoreError> {
    let mut key = conn
        .prepare_cached("DELETE FROM event_keys WHERE key = ?1 AND id = ?2")
        .map_err(unavailable)?;
    let mut event = conn
        .prepare_cached("DELETE FROM events WHERE id = ?1")
        .map_err(unavailable)?;
    for d in doomed {
        let kind = d.kind.as_deref().unwrap_or_default();
        for k in [
            format!("r:{}", d.run_id),
            format!("w:{}", d.workflow_id),
            format!("t:{kind}"),
        ] {
            key.execute(params![k, d.id]).map_err(unavailable)?;
        }
        event.execute([d.id]).map_err(unavailable)?;
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
        for filter in filters() {
            for after in [0, 10, 29, 30, 45] {
                for limit in [1, 3, 100] {
                    let got = ids(&list(&conn, &filter, after, limit).unwrap());
                    assert_eq!(
                        got,
                        expected(50, &filter, after, limit),
                        "{filter:?} after {after} limit {limit}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_pass_indexes_what_was_appended_since_the_last_one() {
        let conn = outbox(5);
        index_new(&conn).unwrap();
        index_new(&conn).unwrap();
        append(&conn, 6..=7);
        index_new(&conn).unwrap();
        assert_eq!(indexed_upto(&conn).unwrap(), 7);
        let keys: i64 = conn
            .query_row("SELECT COUNT(*) FROM event_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(keys, 3 * 7);
        let run: Vec<i64> = conn
            .prepare("SELECT id FROM event_keys WHERE key = 'r:r1' ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(run, [1, 4, 7]);
    }

    #[test]
    fn deleting_a_runs_events_or_pruning_old_ones_takes_their_keys_too() {
        let conn = outbox(20);
        index_new(&conn).unwrap();
        append(&conn, 21..=24);
        // r1: 1, 4, …, 19 indexed; 22 not yet.
        assert_eq!(forget_runs(&conn, &["r1".to_owned()]).unwrap(), 8);
        let run = EventFilter {
            run_id: Some("r1".into()),
            ..EventFilter::default()
        };
        assert!(list(&conn, &run, 0, 100).unwrap().is_empty());
        // Acknowledged up to 10, created (here: at their id, in ms) before 8.
        assert_eq!(
            prune(&conn, 10, 8, 100).unwrap(),
            4,
            "2, 3, 5, 6 (7 went with r1)"
        );
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM event_keys", [], |r| r.get(0))
            .unwrap();
        let indexed_left = (1..=20).filter(|i| i % 3 != 1 && *i >= 8).count() as i64;
        assert_eq!(left, 3 * indexed_left, "no key outlives its event");
        index_new(&conn).unwrap();
        let all = list(&conn, &EventFilter::default(), 0, 100).unwrap();
        assert_eq!(
            ids(&all),
            (1..=24)
                .filter(|i| i % 3 != 1 && *i >= 8)
                .collect::<Vec<u64>>()
        );
    }

    #[test]
    fn a_store_from_before_the_keys_gets_them_for_every_event_it_holds() {
        let conn = Connection::open_in_memory().unwrap();
        let before = (super::super::MIGRATIONS.iter())
            .position(|sql| sql.contains("CREATE TABLE event_keys"))
            .unwrap();
        for sql in &super::super::MIGRATIONS[..before] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(&format!("PRAGMA user_version = {before}"))
            .unwrap();
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
            &format!(
                "SELECT {EVENT_COLUMNS} FROM event_keys k JOIN events e ON e.id = k.id \
                 WHERE k.key = ?1 AND k.id > ?2 AND k.id <= ?3 ORDER BY k.id DESC LIMIT ?4"
            ),
        );
        assert!(
            plan.contains("SEARCH k USING PRIMARY KEY (key=? AND id>? AND id<?)"),
            "{plan}"
        );
        assert!(
            plan.contains("SEARCH e USING INTEGER PRIMARY KEY (rowid=?)"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        let plan = self::plan(
            &conn,
            "SELECT e.id FROM event_keys k JOIN events e ON e.id = k.id WHERE k.key = 'r:' || ?1",
        );
        assert!(
            plan.contains("SEARCH k USING PRIMARY KEY (key=?)"),
            "{plan}"
        );
    }
}
