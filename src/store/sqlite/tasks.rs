//! Task queues in the embedded store. Every change goes through the single writer, so a
//! read followed by an update inside one job is atomic: a claim, a heartbeat, an end and
//! an expiry each check the row and change it in one step, and two of them never both
//! win one claim.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::SqliteStore;
use super::pool::unavailable;
use super::queues::{min_time, queues, workers};
use super::rows::{from_ms, json, ms, to_json};
use crate::model::Timestamp;
use crate::store::StoreError;
use crate::store::tasks::{
    ClaimedTask, Heartbeat, QueueStats, TASK_COLUMNS, TaskClaim, TaskEnd, TaskKey, TaskOp,
    TaskRecord, TaskStatus, TaskStore, TaskTimes, WorkerSeen, expiry_error, lease_end, stale_claim,
};

/// A task row with the digest of its current claim's token.
struct Stored {
    task: TaskRecord,
    token: Option<Vec<u8>>,
}

fn task_row(row: &Row<'_>) -> rusqlite::Result<Result<Stored, StoreError>> {
    let status: String = row.get(6)?;
    let progress: Option<String> = row.get(14)?;
    let output: Option<String> = row.get(16)?;
    let payload: String = row.get(21)?;
    let opt_ms = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
        Ok(row.get::<_, Option<i64>>(i)?.map(from_ms))
    };
    let task = TaskRecord {
        id: row.get(0)?,
        queue: row.get(1)?,
        run_id: row.get(2)?,
        workflow_id: row.get(3)?,
        step: row.get(4)?,
        attempt: row.get(5)?,
        status: TaskStatus::Waiting,
        payload: Value::Null,
        heartbeat_ms: row.get::<_, i64>(7)?.max(0) as u64,
        timeout_ms: row.get::<_, Option<i64>>(8)?.map(|t| t.max(0) as u64),
        created_at: from_ms(row.get(9)?),
        available_at: from_ms(row.get(10)?),
        worker: row.get(11)?,
        claimed_at: opt_ms(12)?,
        lease_expires_at: opt_ms(13)?,
        progress: None,
        ended_at: opt_ms(15)?,
        output: None,
        error: row.get(17)?,
        retryable: row.get::<_, i64>(18)? != 0,
        settled: row.get::<_, i64>(19)? != 0,
    };
    let token: Option<Vec<u8>> = row.get(20)?;
    let decode = move || -> Result<Stored, StoreError> {
        let mut task = task;
        task.status = status.parse()?;
        task.payload = json(&payload)?;
        task.progress = progress.as_deref().map(json).transpose()?;
        task.output = output.as_deref().map(json).transpose()?;
        Ok(Stored { task, token })
    };
    Ok(decode())
}

fn load(conn: &Connection, id: &str) -> Result<Option<Stored>, StoreError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1");
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.query_row([id], task_row).optional())
        .map_err(unavailable)?
        .transpose()
}

fn select(
    conn: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Stored>, StoreError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE {filter}");
    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
    let rows = stmt.query_map(args, task_row).map_err(unavailable)?;
    rows.map(|r| r.map_err(unavailable).and_then(|r| r))
        .collect()
}

/// The row of a live claim (`key` holds its token, its lease runs), else why not.
fn live(conn: &Connection, key: &TaskKey) -> Result<Stored, StoreError> {
    let row =
        load(conn, &key.id)?.ok_or_else(|| StoreError::NotFound(format!("task {}", key.id)))?;
    let matches = row
        .token
        .as_deref()
        .is_some_and(|t| bool::from(t.ct_eq(&key.token)));
    let lease = row.task.lease_expires_at;
    let running = row.task.status == TaskStatus::Claimed && lease.is_some_and(|l| l > key.now);
    if matches && (running || row.task.status == TaskStatus::Canceled) {
        return Ok(row);
    }
    Err(stale_claim(
        &key.id,
        row.task.status,
        matches,
        lease,
        key.now,
    ))
}

fn claim(conn: &Connection, claim: TaskClaim) -> Result<Vec<ClaimedTask>, StoreError> {
    let queues = to_json(&claim.queues);
    let now = ms(claim.now);
    let found = select(
        conn,
        "status = 'WAITING' AND queue IN (SELECT value FROM json_each(?1)) \
         AND available_at <= ?2 ORDER BY available_at, id LIMIT ?3",
        &[&queues, &now, &(claim.tokens.len() as i64)],
    )?;
    let mut out = Vec::with_capacity(found.len());
    let mut update = conn
        .prepare_cached(
            "UPDATE tasks SET status = 'CLAIMED', token = ?2, worker = ?3, claimed_at = ?4, \
             lease_expires_at = ?5, progress = NULL WHERE id = ?1",
        )
        .map_err(unavailable)?;
    for (row, token) in found.into_iter().zip(claim.tokens) {
        let t = row.task;
        let lease = lease_end(claim.now, claim.now, t.heartbeat_ms, t.timeout_ms);
        update
            .execute(params![t.id, &token[..], claim.worker, now, ms(lease)])
            .map_err(unavailable)?;
        out.push(ClaimedTask {
            payload: t.payload,
            id: t.id,
            queue: t.queue,
            run_id: t.run_id,
            workflow_id: t.workflow_id,
            step: t.step,
            attempt: t.attempt,
            heartbeat_ms: t.heartbeat_ms,
            timeout_ms: t.timeout_ms,
            token,
            lease_expires_at: lease,
            available_at: t.available_at,
        });
    }
    Ok(out)
}

fn heartbeat(
    conn: &Connection,
    key: TaskKey,
    progress: Option<Value>,
) -> Result<Heartbeat, StoreError> {
    let row = live(conn, &key)?;
    let t = row.task;
    if t.status == TaskStatus::Canceled {
        return Ok(Heartbeat {
            cancel: true,
            lease_expires_at: t.lease_expires_at,
        });
    }
    let claimed = t.claimed_at.unwrap_or(key.now);
    let lease = lease_end(key.now, claimed, t.heartbeat_ms, t.timeout_ms);
    let progress = progress.map(|p| to_json(&p));
    conn.prepare_cached(
        "UPDATE tasks SET lease_expires_at = ?2, progress = COALESCE(?3, progress) WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![key.id, ms(lease), progress]))
    .map_err(unavailable)?;
    Ok(Heartbeat {
        cancel: false,
        lease_expires_at: Some(lease),
    })
}

fn end(conn: &Connection, key: TaskKey, end: TaskEnd) -> Result<TaskRecord, StoreError> {
    let row = live(conn, &key)?;
    if row.task.status == TaskStatus::Canceled {
        return Err(stale_claim(
            &key.id,
            TaskStatus::Canceled,
            true,
            None,
            key.now,
        ));
    }
    let (status, output, error, retryable) = match end {
        TaskEnd::Completed { output } => (TaskStatus::Completed, Some(output), None, true),
        TaskEnd::Failed { error, retryable } => (TaskStatus::Failed, None, Some(error), retryable),
    };
    conn.prepare_cached(
        "UPDATE tasks SET status = ?2, ended_at = ?3, output = ?4, error = ?5, retryable = ?6, \
         settled = 0 WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.id,
            status.as_str(),
            ms(key.now),
            output.as_ref().map(to_json),
            error,
            retryable as i64
        ])
    })
    .map_err(unavailable)?;
    let mut task = row.task;
    task.status = status;
    task.ended_at = Some(key.now);
    task.output = output;
    task.error = error;
    task.retryable = retryable;
    task.settled = false;
    Ok(task)
}

fn expire(conn: &Connection, now: Timestamp, limit: usize) -> Result<Vec<TaskRecord>, StoreError> {
    let found = select(
        conn,
        "status = 'CLAIMED' AND lease_expires_at <= ?1 ORDER BY lease_expires_at LIMIT ?2",
        &[&ms(now), &(limit as i64)],
    )?;
    let mut update = conn
        .prepare_cached(
            "UPDATE tasks SET status = 'EXPIRED', ended_at = ?2, error = ?3, retryable = 1, \
             settled = 0 WHERE id = ?1",
        )
        .map_err(unavailable)?;
    let mut out = Vec::with_capacity(found.len());
    for row in found {
        let mut t = row.task;
        let error = expiry_error(&t, now);
        update
            .execute(params![t.id, ms(now), error])
            .map_err(unavailable)?;
        t.status = TaskStatus::Expired;
        t.ended_at = Some(now);
        t.error = Some(error);
        t.retryable = true;
        t.settled = false;
        out.push(t);
    }
    Ok(out)
}

/// Applies the task changes of a run's commit (inside its savepoint, after its guard held).
pub fn apply_ops(conn: &Connection, ops: &[TaskOp]) -> Result<(), StoreError> {
    for op in ops {
        match op {
            TaskOp::Enqueue(t) => {
                conn.prepare_cached(
                    "INSERT INTO tasks (id, queue, run_id, workflow_id, step, attempt, status, \
                     payload, heartbeat_ms, timeout_ms, created_at, available_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'WAITING', ?7, ?8, ?9, ?10, ?10)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        t.id,
                        t.queue,
                        t.run_id,
                        t.workflow_id,
                        t.step,
                        t.attempt,
                        to_json(&t.payload),
                        t.heartbeat_ms as i64,
                        t.timeout_ms.map(|v| v as i64),
                        ms(t.available_at)
                    ])
                })
                .map_err(unavailable)?;
                conn.prepare_cached(
                    "INSERT INTO task_queues (name, created_at) VALUES (?1, ?2) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![t.queue, ms(t.available_at)]))
                .map_err(unavailable)?;
            }
            TaskOp::Retry {
                id,
                attempt,
                available_at,
                ..
            } => {
                conn.prepare_cached(
                    "UPDATE tasks SET status = 'WAITING', attempt = ?2, available_at = ?3, \
                     token = NULL, claimed_at = NULL, lease_expires_at = NULL, progress = NULL, \
                     ended_at = NULL, output = NULL, error = NULL, retryable = 1, settled = 1 \
                     WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![id, attempt, ms(*available_at)]))
                .map_err(unavailable)?;
            }
            TaskOp::Settle { id } => {
                conn.prepare_cached("UPDATE tasks SET settled = 1, output = NULL WHERE id = ?1")
                    .and_then(|mut s| s.execute([id]))
                    .map_err(unavailable)?;
            }
            TaskOp::Cancel { id, .. } => {
                conn.prepare_cached(
                    "UPDATE tasks SET status = CASE WHEN status IN ('WAITING', 'CLAIMED') \
                     THEN 'CANCELED' ELSE status END, settled = 1, output = NULL WHERE id = ?1",
                )
                .and_then(|mut s| s.execute([id]))
                .map_err(unavailable)?;
            }
        }
    }
    Ok(())
}

fn settle(conn: &Connection, id: &str, attempt: u32) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE tasks SET settled = 1, output = NULL WHERE id = ?1 AND attempt = ?2 AND settled = 0",
    )
    .and_then(|mut s| s.execute(params![id, attempt]))
    .map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn claim_tasks(&self, request: TaskClaim) -> Result<Vec<ClaimedTask>, StoreError> {
        if request.tokens.is_empty() || request.queues.is_empty() {
            return Ok(Vec::new());
        }
        self.writer.write(move |c| claim(c, request)).await
    }

    async fn heartbeat_task(
        &self,
        key: TaskKey,
        progress: Option<Value>,
    ) -> Result<Heartbeat, StoreError> {
        self.writer
            .write(move |c| heartbeat(c, key, progress))
            .await
    }

    async fn end_task(&self, key: TaskKey, how: TaskEnd) -> Result<TaskRecord, StoreError> {
        self.writer.write(move |c| end(c, key, how)).await
    }

    async fn expire_tasks(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        self.writer.write(move |c| expire(c, now, limit)).await
    }

    async fn unsettled_tasks(
        &self,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        self.readers
            .read(move |c| {
                let rows = select(
                    c,
                    "settled = 0 AND ended_at < ?1 ORDER BY ended_at LIMIT ?2",
                    &[&ms(ended_before), &(limit as i64)],
                )?;
                Ok(rows.into_iter().map(|r| r.task).collect())
            })
            .await
    }

    async fn settle_task(&self, id: &str, attempt: u32) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.writer.write(move |c| settle(c, &id, attempt)).await
    }

    async fn get_task(&self, id: &str) -> Result<TaskRecord, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |c| {
                load(c, &id)?
                    .map(|r| r.task)
                    .ok_or_else(|| StoreError::NotFound(format!("task {id}")))
            })
            .await
    }

    async fn task_times(&self, queues: &[String]) -> Result<TaskTimes, StoreError> {
        let queues = to_json(&queues);
        self.readers
            .read(move |c| {
                Ok(TaskTimes {
                    next_available: min_time(
                        c,
                        "SELECT MIN(available_at) FROM tasks WHERE status = 'WAITING' \
                         AND queue IN (SELECT value FROM json_each(?1))",
                        &[&queues],
                    )?,
                    next_expiry: min_time(
                        c,
                        "SELECT MIN(lease_expires_at) FROM tasks WHERE status = 'CLAIMED'",
                        &[],
                    )?,
                })
            })
            .await
    }

    async fn list_queues(&self, workers_since: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
        self.readers.read(move |c| queues(c, workers_since)).await
    }

    async fn record_worker(
        &self,
        name: &str,
        queues: &[String],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let (name, queues) = (name.to_owned(), to_json(&queues));
        self.writer
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO task_workers (name, queues, last_seen) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET queues = excluded.queues, \
                     last_seen = MAX(last_seen, excluded.last_seen)",
                )
                .and_then(|mut s| s.execute(params![name, queues, ms(at)]))
                .map_err(unavailable)?;
                Ok(())
            })
            .await
    }

    async fn list_workers(&self, since: Timestamp) -> Result<Vec<WorkerSeen>, StoreError> {
        self.readers.read(move |c| workers(c, since)).await
    }

    async fn prune_workers(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.writer
            .write(move |c| {
                c.prepare_cached("DELETE FROM task_workers WHERE last_seen < ?1")
                    .and_then(|mut s| s.execute([ms(before)]))
                    .map(|n| n as u64)
                    .map_err(unavailable)
            })
            .await
    }
}
