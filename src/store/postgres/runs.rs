//! Run writes of the PostgreSQL store: creation with idempotency keys, claims and client
//! log appends (guarded transitions are in `commit`). Each function runs inside one writer
//! savepoint and mirrors the embedded store's function of the same name.

use deadpool_postgres::GenericClient;

use crate::model::{LogEntry, NewEvent, NewLogEntry, now};
use crate::store::{CreatedRun, LogLimits, NewRun, StoreError};

use super::notify::Outgoing;
use super::rows::{get, load_run, ms, put_logs, put_steps, to_json};
use super::writer::{Done, Fault};

/// Inserts a run, or finds the one its idempotency key already created.
pub async fn create_run<C: GenericClient>(
    c: &C,
    mut new: NewRun,
) -> Result<Done<CreatedRun>, Fault> {
    let at = now();
    if let Some(claim) = &new.idempotency {
        // Two tries: a concurrent insert of the same key makes the first one find nothing
        // to lock and then lose the insert; the second sees the winner's row.
        for _ in 0..2 {
            let existing = c
                .query_opt(
                    "SELECT body_hash, run_id, expires_at FROM idempotency_keys WHERE key = $1 FOR UPDATE",
                    &[&claim.key],
                )
                .await?;
            if let Some(row) = existing {
                let (hash, run_id, expires): (String, String, i64) =
                    (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
                if expires > ms(at) {
                    if hash != claim.body_hash {
                        return Err(StoreError::Conflict(format!(
                            "Idempotency-Key {:?} was already used with a different request body",
                            claim.key
                        ))
                        .into());
                    }
                    return Ok(Done::quiet(CreatedRun {
                        run: load_run(c, &run_id).await?,
                        created: false,
                        logs: Vec::new(),
                    }));
                }
                c.execute("DELETE FROM idempotency_keys WHERE key = $1", &[&claim.key])
                    .await?;
            }
            let inserted = c
                .execute(
                    "INSERT INTO idempotency_keys (key, body_hash, run_id, expires_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                    &[&claim.key, &claim.body_hash, &new.id, &ms(claim.expires_at)],
                )
                .await?;
            if inserted == 1 {
                break;
            }
        }
    }
    if let Some(fire) = &new.schedule {
        super::triggers::fire_schedule(c, fire, &new.id).await?;
    }
    let (owner, lease) = match &new.owner {
        Some(l) => (
            Some(l.owner.as_str()),
            Some(ms(at) + l.ttl.as_millis() as i64),
        ),
        None => (None, None),
    };
    let inserted = c
        .execute(
            "INSERT INTO runs (id, workflow_id, workflow_version, status, current_step, context, \
             created_at, updated_at, owner, lease_expires_at, log_seq, event_seq, parent_run_id, \
             extra, budget, trigger_info) \
             VALUES ($1, $2, $3, 'PENDING', 0, $4, $5, $5, $6, $7, $8, $13, $9, $10, $11, $12) \
             ON CONFLICT (id) DO NOTHING",
            &[
                &new.id,
                &new.workflow_id,
                &i64::from(new.workflow_version),
                &to_json(&new.context),
                &ms(at),
                &owner,
                &lease,
                &(new.logs.len() as i64),
                &new.parent.as_ref().map(|(id, _)| id.clone()),
                &new.run_extra().map(|e| to_json(&e)),
                &new.budget.as_ref().map(to_json),
                &new.trigger.as_ref().map(to_json),
                &(new.events.len() as i64),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("run {} already exists", new.id)).into());
    }
    let log_count = new.logs.len() as u64;
    let (entries, events) = (
        std::mem::take(&mut new.logs),
        std::mem::take(&mut new.events),
    );
    let steps: Vec<(usize, &crate::model::StepRun)> = new.steps.iter().enumerate().collect();
    // The run's rows need only its head: sent together, pipelined on the connection.
    let (_, logs, _) = tokio::try_join!(
        put_steps(c, &new.id, &steps),
        put_logs(c, &new.id, 1, entries),
        put_events(c, &new.id, &new.workflow_id, 1, events),
    )?;
    let notice = Outgoing {
        run_id: new.id.clone(),
        rev: None,
        logs: (log_count > 0).then_some((1, log_count)),
        claimable: owner.is_none(),
        queues: Vec::new(),
    };
    let run = new.into_run(at);
    Ok(Done {
        value: CreatedRun {
            run,
            created: true,
            logs,
        },
        notices: vec![notice],
    })
}

async fn put_events<C: GenericClient>(
    c: &C,
    run_id: &str,
    workflow_id: &str,
    first_seq: u64,
    events: Vec<NewEvent>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let seq: Vec<i64> = (0..events.len())
        .map(|i| (first_seq + i as u64) as i64)
        .collect();
    let body: Vec<String> = events.iter().map(to_json).collect();
    let created: Vec<i64> = events.iter().map(|e| ms(e.ts)).collect();
    c.execute(
        "INSERT INTO events (run_id, workflow_id, seq, body, created_at) \
         SELECT $1, $2, * FROM UNNEST($3::bigint[], $4::text[], $5::bigint[])",
        &[&run_id, &workflow_id, &seq, &body, &created],
    )
    .await
    .map_err(super::db_error)?;
    Ok(())
}

/// Claims runs that need an owner, skipping rows other replicas hold locked right now.
pub async fn claim<C: GenericClient>(
    c: &C,
    owner: &str,
    ttl_ms: i64,
    limit: usize,
) -> Result<Done<Vec<String>>, Fault> {
    let at = ms(now());
    let stmt = c
        .prepare_cached(
            "UPDATE runs SET owner = $1, lease_expires_at = $2, rev = rev + 1 WHERE id IN ( \
               SELECT id FROM runs WHERE status IN ('PENDING', 'RUNNING') \
               AND (owner IS NULL OR lease_expires_at < $3) ORDER BY id LIMIT $4 \
               FOR UPDATE SKIP LOCKED) \
             RETURNING id, rev",
        )
        .await?;
    let rows = c
        .query(&stmt, &[&owner, &(at + ttl_ms), &at, &(limit as i64)])
        .await?;
    let mut ids = rows
        .iter()
        .map(|r| Ok((get::<String>(r, 0)?, get::<i64>(r, 1)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    ids.sort();
    Ok(Done {
        notices: ids
            .iter()
            .map(|(id, rev)| Outgoing {
                run_id: id.clone(),
                rev: Some(*rev as u64),
                logs: None,
                claimable: false,
                queues: Vec::new(),
            })
            .collect(),
        value: ids.into_iter().map(|(id, _)| id).collect(),
    })
}

/// Appends client lines within the per-run limit.
pub async fn append_client_logs<C: GenericClient>(
    c: &C,
    run_id: &str,
    entries: Vec<NewLogEntry>,
    limits: LogLimits,
) -> Result<Done<Vec<LogEntry>>, Fault> {
    let n = entries.len() as i64;
    let seq = c
        .query_opt(
            "UPDATE runs SET log_seq = log_seq + $2 WHERE id = $1 AND log_seq + $2 <= $3 RETURNING log_seq",
            &[&run_id, &n, &(limits.max_entries as i64)],
        )
        .await?;
    match seq {
        Some(row) => {
            let last: i64 = get(&row, 0)?;
            let first = (last - n + 1) as u64;
            let logs = put_logs(c, run_id, first, entries).await?;
            Ok(Done {
                value: logs,
                notices: vec![Outgoing {
                    run_id: run_id.to_owned(),
                    rev: None,
                    logs: (n > 0).then_some((first, last as u64)),
                    claimable: false,
                    queues: Vec::new(),
                }],
            })
        }
        None => {
            let held = c
                .query_opt("SELECT log_seq FROM runs WHERE id = $1", &[&run_id])
                .await?;
            Err(match held {
                None => StoreError::NotFound(format!("run {run_id}")),
                Some(row) => StoreError::Conflict(format!(
                    "the log of run {run_id} holds {} of at most {} entries; {n} more do not fit",
                    get::<i64>(&row, 0)?,
                    limits.max_entries
                )),
            }
            .into())
        }
    }
}
