//! Run writes of the PostgreSQL store: creation with idempotency keys, guarded
//! transitions, claims and client log appends. Each function runs inside one writer
//! savepoint and mirrors the embedded store's function of the same name.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use crate::model::{LogEntry, NewEvent, NewLogEntry, Run, RunControl, RunStatus, now};
use crate::store::{
    Committed, CreatedRun, Guard, LogLimits, NewRun, OwnerChange, StoreError, Transition,
};

use super::notify::Outgoing;
use super::rows::{get, load_run, ms, put_logs, put_steps, to_json};
use super::writer::{Done, Fault};

/// Outbox inserts take this transaction-level advisory lock so that event ids are handed
/// out in commit order (a reader never skips a lower id that commits later).
const OUTBOX_LOCK: i64 = 0x6f72_6368_6576_0001;

/// Inserts a run, or finds the one its idempotency key already created.
pub async fn create_run<C: GenericClient>(c: &C, new: NewRun) -> Result<Done<CreatedRun>, Fault> {
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
             created_at, updated_at, owner, lease_expires_at, log_seq) \
             VALUES ($1, $2, $3, 'PENDING', 0, $4, $5, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            &[
                &new.id,
                &new.workflow_id,
                &i64::from(new.workflow_version),
                &to_json(&new.context),
                &ms(at),
                &owner,
                &lease,
                &(new.logs.len() as i64),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("run {} already exists", new.id)).into());
    }
    let steps: Vec<(usize, &crate::model::StepRun)> = new.steps.iter().enumerate().collect();
    put_steps(c, &new.id, &steps).await?;
    let log_count = new.logs.len() as u64;
    let logs = put_logs(c, &new.id, 1, new.logs).await?;
    if !new.events.is_empty() {
        c.execute(
            "UPDATE runs SET event_seq = $2 WHERE id = $1",
            &[&new.id, &(new.events.len() as i64)],
        )
        .await?;
        put_events(c, &new.id, &new.workflow_id, 1, new.events).await?;
    }
    let notice = Outgoing {
        run_id: new.id.clone(),
        rev: None,
        logs: (log_count > 0).then_some((1, log_count)),
        claimable: owner.is_none(),
    };
    let run = Run {
        id: new.id,
        workflow_id: new.workflow_id,
        workflow_version: new.workflow_version,
        status: RunStatus::Pending,
        current_step: 0,
        context: new.context,
        steps: new.steps,
        error: None,
        approvals: Vec::new(),
        usage: Default::default(),
        created_at: at,
        updated_at: at,
        started_at: None,
        finished_at: None,
        control: RunControl::default(),
    };
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
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&OUTBOX_LOCK])
        .await
        .map_err(super::db_error)?;
    c.execute(
        "INSERT INTO events (run_id, workflow_id, seq, body) \
         SELECT $1, $2, * FROM UNNEST($3::bigint[], $4::text[])",
        &[&run_id, &workflow_id, &seq, &body],
    )
    .await
    .map_err(super::db_error)?;
    Ok(())
}

/// Applies a guarded transition: one guarded `UPDATE … RETURNING`, then the child rows
/// in pipelined statements.
pub async fn commit<C: GenericClient>(c: &C, tx: Transition) -> Result<Done<Committed>, Fault> {
    let at = now();
    let mut sql = String::from(
        "UPDATE runs SET rev = rev + 1, updated_at = $1, log_seq = log_seq + $2, event_seq = event_seq + $3",
    );
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(ms(at)),
        Box::new(tx.logs.len() as i64),
        Box::new(tx.events.len() as i64),
    ];
    let mut push = |sql: &mut String, column: &str, value: Box<dyn ToSql + Sync + Send>| {
        args.push(value);
        sql.push_str(&format!(", {column} = ${}", args.len()));
    };
    if let Some(head) = &tx.head {
        push(&mut sql, "status", Box::new(head.status.as_str()));
        push(&mut sql, "current_step", Box::new(head.current_step as i64));
        push(&mut sql, "error", Box::new(head.error.clone()));
        push(&mut sql, "usage", Box::new(to_json(&head.usage)));
        push(&mut sql, "started_at", Box::new(head.started_at.map(ms)));
        push(&mut sql, "finished_at", Box::new(head.finished_at.map(ms)));
        push(&mut sql, "active_ms", Box::new(head.active_ms as i64));
        push(
            &mut sql,
            "approval_deadline",
            Box::new(head.approval_deadline.map(ms)),
        );
    }
    if let Some(context) = &tx.context {
        push(&mut sql, "context", Box::new(to_json(context)));
    }
    match &tx.owner {
        OwnerChange::Keep => {}
        OwnerChange::Take(lease) => {
            push(&mut sql, "owner", Box::new(lease.owner.clone()));
            push(
                &mut sql,
                "lease_expires_at",
                Box::new(ms(at) + lease.ttl.as_millis() as i64),
            );
        }
        OwnerChange::Release => sql.push_str(", owner = NULL, lease_expires_at = NULL"),
    }
    args.push(Box::new(tx.run_id.clone()));
    sql.push_str(&format!(" WHERE id = ${}", args.len()));
    append_guard(&mut sql, &mut args, &tx.guard);
    sql.push_str(" RETURNING rev, log_seq, event_seq, workflow_id, status, owner IS NULL");
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let stmt = c.prepare_cached(&sql).await?;
    let Some(row) = c.query_opt(&stmt, &params).await? else {
        return Err(guard_failure(c, &tx.run_id, &tx.guard).await.into());
    };
    let (rev, log_seq, event_seq, workflow_id, status, unowned): (
        i64,
        i64,
        i64,
        String,
        String,
        bool,
    ) = (
        get(&row, 0)?,
        get(&row, 1)?,
        get(&row, 2)?,
        get(&row, 3)?,
        get(&row, 4)?,
        get(&row, 5)?,
    );
    let first_event = event_seq as u64 + 1 - tx.events.len() as u64;
    let first_log = log_seq as u64 + 1 - tx.logs.len() as u64;
    let log_count = tx.logs.len() as u64;
    let steps: Vec<(usize, &crate::model::StepRun)> =
        tx.steps.iter().map(|(i, s)| (*i, s)).collect();
    let (_, _, _, logs) = futures::try_join!(
        put_steps(c, &tx.run_id, &steps),
        put_approvals(c, &tx),
        put_events(c, &tx.run_id, &workflow_id, first_event, tx.events.clone()),
        put_logs(c, &tx.run_id, first_log, tx.logs.clone()),
    )?;
    let claimable = unowned && matches!(status.as_str(), "PENDING" | "RUNNING");
    Ok(Done {
        value: Committed {
            rev: rev as u64,
            logs,
        },
        notices: vec![Outgoing {
            run_id: tx.run_id.clone(),
            rev: Some(rev as u64),
            logs: (log_count > 0).then_some((first_log, first_log + log_count - 1)),
            claimable,
        }],
    })
}

async fn put_approvals<C: GenericClient>(c: &C, tx: &Transition) -> Result<(), StoreError> {
    if tx.approvals.is_empty() {
        return Ok(());
    }
    let step: Vec<&str> = tx.approvals.iter().map(|a| a.step.as_str()).collect();
    let decision: Vec<&str> = tx.approvals.iter().map(|a| a.decision.as_str()).collect();
    let by: Vec<&str> = tx.approvals.iter().map(|a| a.by.as_str()).collect();
    let at: Vec<i64> = tx.approvals.iter().map(|a| ms(a.at)).collect();
    let comment: Vec<Option<&str>> = tx.approvals.iter().map(|a| a.comment.as_deref()).collect();
    let input: Vec<Option<String>> = tx
        .approvals
        .iter()
        .map(|a| a.input.as_ref().map(to_json))
        .collect();
    c.execute(
        "INSERT INTO approvals (run_id, n, step, decision, by_name, at, comment, input) \
         SELECT $1, (SELECT COALESCE(MAX(n), 0) FROM approvals WHERE run_id = $1) + o, \
           s, d, b, a, cm, i \
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[]) \
           WITH ORDINALITY AS u(s, d, b, a, cm, i, o)",
        &[&tx.run_id, &step, &decision, &by, &at, &comment, &input],
    )
    .await
    .map_err(super::db_error)?;
    Ok(())
}

fn append_guard(sql: &mut String, args: &mut Vec<Box<dyn ToSql + Sync + Send>>, guard: &Guard) {
    if let Some(rev) = guard.rev {
        args.push(Box::new(rev as i64));
        sql.push_str(&format!(" AND rev = ${}", args.len()));
    }
    if let Some(owner) = &guard.owner {
        args.push(Box::new(owner.clone()));
        sql.push_str(&format!(" AND owner = ${}", args.len()));
    }
    if let Some(statuses) = &guard.status_in {
        // Closed-enum names only, so inlining them is safe and keeps one plan per set.
        let list: Vec<String> = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        sql.push_str(&format!(" AND status IN ({})", list.join(",")));
    }
}

/// Explains why a guarded update matched no row.
async fn guard_failure<C: GenericClient>(c: &C, run_id: &str, guard: &Guard) -> StoreError {
    let found = c
        .query_opt(
            "SELECT status, rev, owner FROM runs WHERE id = $1",
            &[&run_id],
        )
        .await;
    match found {
        Err(e) => super::db_error(e),
        Ok(None) => StoreError::NotFound(format!("run {run_id}")),
        Ok(Some(row)) => {
            let read = || -> Result<(String, i64, Option<String>), StoreError> {
                Ok((get(&row, 0)?, get(&row, 1)?, get(&row, 2)?))
            };
            let (status, rev, owner) = match read() {
                Ok(found) => found,
                Err(e) => return e,
            };
            let reason = if guard
                .status_in
                .as_ref()
                .is_some_and(|s| !s.iter().any(|s| s.as_str() == status))
            {
                format!("run {run_id} is {status}")
            } else if guard.owner.is_some() && guard.owner != owner {
                format!("run {run_id} is owned by another server")
            } else if guard.rev.is_some_and(|r| r as i64 != rev) {
                format!("run {run_id} changed concurrently")
            } else {
                format!("run {run_id} did not match the expected state")
            };
            StoreError::Conflict(reason)
        }
    }
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
