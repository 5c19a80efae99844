//! Reads of task queues in the embedded store: when tasks become due, and the listings of
//! queues and workers (`GET /v1/queues`, `GET /v1/workers`). Counts read the partial
//! indexes of waiting and claimed tasks only, however many tasks have ended.

use rusqlite::Connection;

use super::pool::unavailable;
use super::rows::{from_ms, json, ms};
use crate::model::Timestamp;
use crate::store::StoreError;
use crate::store::tasks::{QueueStats, WorkerSeen};

/// The single timestamp `sql` selects (a `MIN`), if any.
pub fn min_time(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Option<Timestamp>, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_row(args, |r| r.get::<_, Option<i64>>(0)))
        .map(|v| v.map(from_ms))
        .map_err(unavailable)
}

/// Every queue used or polled lately, with what waits on it and what is in flight.
pub fn queues(conn: &Connection, workers_since: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
    let mut stats: std::collections::BTreeMap<String, QueueStats> = Default::default();
    let mut stmt = conn
        .prepare_cached("SELECT name FROM task_queues")
        .map_err(unavailable)?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    for name in names {
        stats
            .entry(name.clone())
            .or_insert_with(|| QueueStats::empty(&name));
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT queue, COUNT(*), MIN(available_at) FROM tasks WHERE status = 'WAITING' GROUP BY queue",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(unavailable)?;
    for row in rows {
        let (q, n, oldest) = row.map_err(unavailable)?;
        let s = stats
            .entry(q.clone())
            .or_insert_with(|| QueueStats::empty(&q));
        s.waiting = n.max(0) as u64;
        s.oldest_waiting_at = Some(from_ms(oldest));
    }
    let mut stmt = conn
        .prepare_cached("SELECT queue, COUNT(*) FROM tasks WHERE status = 'CLAIMED' GROUP BY queue")
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(unavailable)?;
    for row in rows {
        let (q, n) = row.map_err(unavailable)?;
        let s = stats
            .entry(q.clone())
            .or_insert_with(|| QueueStats::empty(&q));
        s.in_flight = n.max(0) as u64;
    }
    for worker in workers(conn, workers_since)? {
        for q in worker.queues {
            let s = stats
                .entry(q.clone())
                .or_insert_with(|| QueueStats::empty(&q));
            s.workers.push(worker.name.clone());
        }
    }
    Ok(stats.into_values().collect())
}

/// Workers seen since `since`, with the tasks each holds claimed.
pub fn workers(conn: &Connection, since: Timestamp) -> Result<Vec<WorkerSeen>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT w.name, w.queues, w.last_seen, \
             (SELECT COUNT(*) FROM tasks t WHERE t.status = 'CLAIMED' AND t.worker = w.name) \
             FROM task_workers w WHERE w.last_seen >= ?1 ORDER BY w.name",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([ms(since)], |r| {
            let queues: String = r.get(1)?;
            Ok((
                r.get::<_, String>(0)?,
                queues,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for row in rows {
        let (name, queues, seen, in_flight) = row.map_err(unavailable)?;
        out.push(WorkerSeen {
            name,
            queues: json(&queues)?,
            last_seen: from_ms(seen),
            in_flight: in_flight.max(0) as u64,
        });
    }
    Ok(out)
}
