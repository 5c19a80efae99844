//! Task queues in the PostgreSQL store. Claims take the head of the queues with
//! `FOR UPDATE SKIP LOCKED`, so replicas and writers claiming at once never wait for each
//! other nor take the same task; a heartbeat, an end and an expiry lock the task's row and
//! check the claim before changing it, so exactly one of them wins a claim. Writes go
//! through the group-commit writer; reads use the pool.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio_postgres::Row;

use super::queues::{min_time, queues, workers};
use super::rows::{from_ms, get, json, ms, to_json};
use super::writer::{Done, Fault};
use super::{PostgresStore, db_error};
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

fn task_row(row: &Row) -> Result<Stored, StoreError> {
    let opt_ms = |i: usize| -> Result<Option<Timestamp>, StoreError> {
        Ok(get::<Option<i64>>(row, i)?.map(from_ms))
    };
    let opt_json = |i: usize| -> Result<Option<Value>, StoreError> {
        get::<Option<String>>(row, i)?
            .as_deref()
            .map(json)
            .transpose()
    };
    let task = TaskRecord {
        id: get(row, 0)?,
        queue: get(row, 1)?,
        run_id: get(row, 2)?,
        workflow_id: get(row, 3)?,
        step: get(row, 4)?,
        attempt: get::<i64>(row, 5)?.clamp(0, i64::from(u32::MAX)) as u32,
        status: get::<String>(row, 6)?.parse()?,
        payload: json(&get::<String>(row, 21)?)?,
        heartbeat_ms: get::<i64>(row, 7)?.max(0) as u64,
        timeout_ms: get::<Option<i64>>(row, 8)?.map(|t| t.max(0) as u64),
        created_at: from_ms(get(row, 9)?),
        available_at: from_ms(get(row, 10)?),
        worker: get(row, 11)?,
        claimed_at: opt_ms(12)?,
        lease_expires_at: opt_ms(13)?,
        progress: opt_json(14)?,
        ended_at: opt_ms(15)?,
        output: opt_json(16)?,
        error: get(row, 17)?,
        retryable: get(row, 18)?,
        settled: get(row, 19)?,
    };
    Ok(Stored {
        task,
        token: get(row, 20)?,
    })
}

/// [`TASK_COLUMNS`] of table alias `alias`.
fn columns_of(alias: &str) -> String {
    TASK_COLUMNS
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The locked row of a live claim (`key` holds its token, its lease runs), else why not.
async fn live<C: GenericClient>(c: &C, key: &TaskKey) -> Result<Stored, Fault> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE");
    let row = c
        .query_opt(&sql, &[&key.id])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("task {}", key.id)))?;
    let row = task_row(&row)?;
    let matches = row
        .token
        .as_deref()
        .is_some_and(|t| bool::from(t.ct_eq(&key.token)));
    let lease = row.task.lease_expires_at;
    let running = row.task.status == TaskStatus::Claimed && lease.is_some_and(|l| l > key.now);
    if matches && (running || row.task.status == TaskStatus::Canceled) {
        return Ok(row);
    }
    Err(stale_claim(&key.id, row.task.status, matches, lease, key.now).into())
}

async fn claim<C: GenericClient>(c: &C, claim: &TaskClaim) -> Result<Vec<ClaimedTask>, Fault> {
    let now = ms(claim.now);
    let tokens: Vec<Vec<u8>> = claim.tokens.iter().map(|t| t.to_vec()).collect();
    let sql = format!(
        "WITH picked AS ( \
           SELECT id, row_number() OVER (ORDER BY available_at, id) AS n FROM ( \
             SELECT id, available_at FROM tasks \
             WHERE status = 'WAITING' AND queue = ANY($1) AND available_at <= $2 \
             ORDER BY available_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) s) \
         UPDATE tasks t SET status = 'CLAIMED', token = ($4::bytea[])[picked.n], worker = $5, \
           claimed_at = $2, progress = NULL, \
           lease_expires_at = LEAST($2 + t.heartbeat_ms, $2 + COALESCE(t.timeout_ms, t.heartbeat_ms)) \
         FROM picked WHERE t.id = picked.id RETURNING {}",
        columns_of("t")
    );
    let rows = c
        .query(
            &sql,
            &[
                &claim.queues,
                &now,
                &(tokens.len() as i64),
                &tokens,
                &claim.worker,
            ],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let Stored { task: t, token } = task_row(row)?;
        let token: [u8; 32] = token
            .as_deref()
            .and_then(|t| t.try_into().ok())
            .ok_or_else(|| StoreError::unavailable("a claimed task has no token"))?;
        out.push(ClaimedTask {
            lease_expires_at: t.lease_expires_at.unwrap_or(claim.now),
            id: t.id,
            queue: t.queue,
            run_id: t.run_id,
            workflow_id: t.workflow_id,
            step: t.step,
            attempt: t.attempt,
            payload: t.payload,
            heartbeat_ms: t.heartbeat_ms,
            timeout_ms: t.timeout_ms,
            token,
            available_at: t.available_at,
        });
    }
    out.sort_by(|a, b| (a.available_at, &a.id).cmp(&(b.available_at, &b.id)));
    Ok(out)
}

async fn heartbeat<C: GenericClient>(
    c: &C,
    key: &TaskKey,
    progress: Option<&Value>,
) -> Result<Heartbeat, Fault> {
    let t = live(c, key).await?.task;
    if t.status == TaskStatus::Canceled {
        return Ok(Heartbeat {
            cancel: true,
            lease_expires_at: t.lease_expires_at,
        });
    }
    let claimed = t.claimed_at.unwrap_or(key.now);
    let lease = lease_end(key.now, claimed, t.heartbeat_ms, t.timeout_ms);
    c.execute(
        "UPDATE tasks SET lease_expires_at = $2, progress = COALESCE($3, progress) WHERE id = $1",
        &[&key.id, &ms(lease), &progress.map(to_json)],
    )
    .await?;
    Ok(Heartbeat {
        cancel: false,
        lease_expires_at: Some(lease),
    })
}

async fn end<C: GenericClient>(c: &C, key: &TaskKey, end: &TaskEnd) -> Result<TaskRecord, Fault> {
    let mut task = live(c, key).await?.task;
    if task.status == TaskStatus::Canceled {
        return Err(stale_claim(&key.id, task.status, true, None, key.now).into());
    }
    let (status, output, error, retryable) = match end {
        TaskEnd::Completed { output } => (TaskStatus::Completed, Some(output.clone()), None, true),
        TaskEnd::Failed { error, retryable } => {
            (TaskStatus::Failed, None, Some(error.clone()), *retryable)
        }
    };
    c.execute(
        "UPDATE tasks SET status = $2, ended_at = $3, output = $4, error = $5, retryable = $6, \
         settled = FALSE WHERE id = $1",
        &[
            &key.id,
            &status.as_str(),
            &ms(key.now),
            &output.as_ref().map(to_json),
            &error,
            &retryable,
        ],
    )
    .await?;
    task.status = status;
    task.ended_at = Some(key.now);
    task.output = output;
    task.error = error;
    task.retryable = retryable;
    task.settled = false;
    Ok(task)
}

async fn expire<C: GenericClient>(
    c: &C,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<TaskRecord>, Fault> {
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'CLAIMED' AND lease_expires_at <= $1 \
         ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let rows = c.query(&sql, &[&ms(now), &(limit as i64)]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut t = task_row(row)?.task;
        t.error = Some(expiry_error(&t, now));
        t.status = TaskStatus::Expired;
        t.ended_at = Some(now);
        t.retryable = true;
        t.settled = false;
        out.push(t);
    }
    if !out.is_empty() {
        let ids: Vec<&str> = out.iter().map(|t| t.id.as_str()).collect();
        let errors: Vec<&str> = out
            .iter()
            .map(|t| t.error.as_deref().unwrap_or(""))
            .collect();
        c.execute(
            "UPDATE tasks t SET status = 'EXPIRED', ended_at = $3, error = u.error, \
             retryable = TRUE, settled = FALSE \
             FROM UNNEST($1::text[], $2::text[]) AS u(id, error) WHERE t.id = u.id",
            &[&ids, &errors, &ms(now)],
        )
        .await?;
    }
    Ok(out)
}

/// Applies the task changes of a run's commit (inside its savepoint, after its guard held).
pub async fn apply_ops<C: GenericClient>(c: &C, ops: &[TaskOp]) -> Result<(), Fault> {
    for op in ops {
        match op {
            TaskOp::Enqueue(t) => {
                c.execute(
                    "INSERT INTO tasks (id, queue, run_id, workflow_id, step, attempt, status, \
                     payload, heartbeat_ms, timeout_ms, created_at, available_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'WAITING', $7, $8, $9, $10, $10)",
                    &[
                        &t.id,
                        &t.queue,
                        &t.run_id,
                        &t.workflow_id,
                        &t.step,
                        &i64::from(t.attempt),
                        &to_json(&t.payload),
                        &(t.heartbeat_ms as i64),
                        &t.timeout_ms.map(|v| v as i64),
                        &ms(t.available_at),
                    ],
                )
                .await?;
                c.execute(
                    "INSERT INTO task_queues (name, created_at) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                    &[&t.queue, &ms(t.available_at)],
                )
                .await?;
            }
            TaskOp::Retry {
                id,
                attempt,
                available_at,
                ..
            } => {
                c.execute(
                    "UPDATE tasks SET status = 'WAITING', attempt = $2, available_at = $3, \
                     token = NULL, claimed_at = NULL, lease_expires_at = NULL, progress = NULL, \
                     ended_at = NULL, output = NULL, error = NULL, retryable = TRUE, \
                     settled = TRUE WHERE id = $1",
                    &[id, &i64::from(*attempt), &ms(*available_at)],
                )
                .await?;
            }
            TaskOp::Settle { id } => {
                c.execute(
                    "UPDATE tasks SET settled = TRUE, output = NULL WHERE id = $1",
                    &[id],
                )
                .await?;
            }
            TaskOp::Cancel { id, .. } => {
                c.execute(
                    "UPDATE tasks SET status = CASE WHEN status IN ('WAITING', 'CLAIMED') \
                     THEN 'CANCELED' ELSE status END, settled = TRUE, output = NULL WHERE id = $1",
                    &[id],
                )
                .await?;
            }
        }
    }
    Ok(())
}

impl PostgresStore {
    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::unavailable_by("no database connection", e))
    }
}

#[async_trait]
impl TaskStore for PostgresStore {
    async fn claim_tasks(&self, request: TaskClaim) -> Result<Vec<ClaimedTask>, StoreError> {
        if request.tokens.is_empty() || request.queues.is_empty() {
            return Ok(Vec::new());
        }
        self.writer
            .write(move |c| {
                let request = request.clone();
                async move { claim(&*c, &request).await.map(Done::quiet) }
            })
            .await
    }

    async fn heartbeat_task(
        &self,
        key: TaskKey,
        progress: Option<Value>,
    ) -> Result<Heartbeat, StoreError> {
        self.writer
            .write(move |c| {
                let (key, progress) = (key.clone(), progress.clone());
                async move {
                    heartbeat(&*c, &key, progress.as_ref())
                        .await
                        .map(Done::quiet)
                }
            })
            .await
    }

    async fn end_task(&self, key: TaskKey, how: TaskEnd) -> Result<TaskRecord, StoreError> {
        self.writer
            .write(move |c| {
                let (key, how) = (key.clone(), how.clone());
                async move { end(&*c, &key, &how).await.map(Done::quiet) }
            })
            .await
    }

    async fn expire_tasks(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        self.writer
            .write(move |c| async move { expire(&*c, now, limit).await.map(Done::quiet) })
            .await
    }

    async fn unsettled_tasks(
        &self,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let c = self.reader().await?;
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE NOT settled AND ended_at < $1 \
             ORDER BY ended_at LIMIT $2"
        );
        let rows = c
            .query(&sql, &[&ms(ended_before), &(limit as i64)])
            .await
            .map_err(db_error)?;
        rows.iter().map(|r| Ok(task_row(r)?.task)).collect()
    }

    async fn settle_task(&self, id: &str, attempt: u32) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |c| {
                let id = id.clone();
                async move {
                    c.execute(
                        "UPDATE tasks SET settled = TRUE, output = NULL \
                         WHERE id = $1 AND attempt = $2 AND NOT settled",
                        &[&id, &i64::from(attempt)],
                    )
                    .await?;
                    Ok(Done::quiet(()))
                }
            })
            .await
    }

    async fn get_task(&self, id: &str) -> Result<TaskRecord, StoreError> {
        let c = self.reader().await?;
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
        let row = c
            .query_opt(&sql, &[&id])
            .await
            .map_err(db_error)?
            .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
        Ok(task_row(&row)?.task)
    }

    async fn task_times(&self, queues: &[String]) -> Result<TaskTimes, StoreError> {
        let c = self.reader().await?;
        Ok(TaskTimes {
            next_available: min_time(
                &c,
                "SELECT MIN(available_at) FROM tasks WHERE status = 'WAITING' AND queue = ANY($1)",
                &[&queues],
            )
            .await?,
            next_expiry: min_time(
                &c,
                "SELECT MIN(lease_expires_at) FROM tasks WHERE status = 'CLAIMED'",
                &[],
            )
            .await?,
        })
    }

    async fn list_queues(&self, workers_since: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
        let c = self.reader().await?;
        queues(&c, workers_since).await
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
                let (name, queues) = (name.clone(), queues.clone());
                async move {
                    c.execute(
                        "INSERT INTO task_workers (name, queues, last_seen) VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO UPDATE SET queues = excluded.queues, \
                         last_seen = GREATEST(task_workers.last_seen, excluded.last_seen)",
                        &[&name, &queues, &ms(at)],
                    )
                    .await?;
                    Ok(Done::quiet(()))
                }
            })
            .await
    }

    async fn list_workers(&self, since: Timestamp) -> Result<Vec<WorkerSeen>, StoreError> {
        let c = self.reader().await?;
        workers(&c, since).await
    }

    async fn prune_workers(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.writer
            .write(move |c| async move {
                let n = c
                    .execute(
                        "DELETE FROM task_workers WHERE last_seen < $1",
                        &[&ms(before)],
                    )
                    .await?;
                Ok::<_, Fault>(Done::quiet(n))
            })
            .await
    }
}
