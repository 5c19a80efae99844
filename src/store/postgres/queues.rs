//! Reads of task queues in the PostgreSQL store: when tasks become due, and the listings
//! of queues and workers (`GET /v1/queues`, `GET /v1/workers`). Counts read the partial
//! indexes of waiting and claimed tasks only, however many tasks have ended.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;

use super::db_error;
use super::rows::{from_ms, get, json, ms};
use crate::model::Timestamp;
use crate::store::StoreError;
use crate::store::tasks::{QueueStats, WorkerSeen};

/// The single timestamp `sql` selects (a `MIN`), if any.
pub async fn min_time<C: GenericClient>(
    c: &C,
    sql: &str,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<Timestamp>, StoreError> {
    let row = c.query_one(sql, args).await.map_err(db_error)?;
    Ok(get::<Option<i64>>(&row, 0)?.map(from_ms))
}

/// Workers seen since `since`, with the tasks each holds claimed.
pub async fn workers<C: GenericClient>(
    c: &C,
    since: Timestamp,
) -> Result<Vec<WorkerSeen>, StoreError> {
    let rows = c
        .query(
            "SELECT w.name, w.queues, w.last_seen, \
             (SELECT COUNT(*) FROM tasks t WHERE t.status = 'CLAIMED' AND t.worker = w.name) \
             FROM task_workers w WHERE w.last_seen >= $1 ORDER BY w.name",
            &[&ms(since)],
        )
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|r| {
            Ok(WorkerSeen {
                name: get(r, 0)?,
                queues: json(&get::<String>(r, 1)?)?,
                last_seen: from_ms(get(r, 2)?),
                in_flight: get::<i64>(r, 3)?.max(0) as u64,
            })
        })
        .collect()
}

/// Every queue used or polled lately, with what waits on it and what is in flight.
pub async fn queues<C: GenericClient>(
    c: &C,
    workers_since: Timestamp,
) -> Result<Vec<QueueStats>, StoreError> {
    let mut stats: BTreeMap<String, QueueStats> = BTreeMap::new();
    for row in c
        .query("SELECT name FROM task_queues", &[])
        .await
        .map_err(db_error)?
    {
        let name: String = get(&row, 0)?;
        stats.insert(name.clone(), QueueStats::empty(&name));
    }
    let waiting = c
        .query(
            "SELECT queue, COUNT(*), MIN(available_at) FROM tasks WHERE status = 'WAITING' \
             GROUP BY queue",
            &[],
        )
        .await
        .map_err(db_error)?;
    for row in &waiting {
        let q: String = get(row, 0)?;
        let s = stats
            .entry(q.clone())
            .or_insert_with(|| QueueStats::empty(&q));
        s.waiting = get::<i64>(row, 1)?.max(0) as u64;
        s.oldest_waiting_at = get::<Option<i64>>(row, 2)?.map(from_ms);
    }
    let claimed = c
        .query(
            "SELECT queue, COUNT(*) FROM tasks WHERE status = 'CLAIMED' GROUP BY queue",
            &[],
        )
        .await
        .map_err(db_error)?;
    for row in &claimed {
        let q: String = get(row, 0)?;
        let s = stats
            .entry(q.clone())
            .or_insert_with(|| QueueStats::empty(&q));
        s.in_flight = get::<i64>(row, 1)?.max(0) as u64;
    }
    for worker in workers(c, workers_since).await? {
        for q in worker.queues {
            let s = stats
                .entry(q.clone())
                .or_insert_with(|| QueueStats::empty(&q));
            s.workers.push(worker.name.clone());
        }
    }
    Ok(stats.into_values().collect())
}
