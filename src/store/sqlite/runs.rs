//! Run writes of the embedded store: creation with idempotency keys, guarded transitions,
//! leases and client log appends. Each function runs inside one writer savepoint.

use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{LogEntry, NewEvent, NewLogEntry, now};
use crate::store::encoding::guard_refusal;
use crate::store::{Committed, CreatedRun, LogLimits, NewRun, OwnerChange, StoreError, Transition};

use super::pool::unavailable;
use super::rows::{StepWrite, load_run, ms, put_logs, put_step, to_json};

/// Inserts a run, or finds the one its idempotency key already created.
pub fn create_run(conn: &Connection, mut new: NewRun) -> Result<CreatedRun, StoreError> {
    let at = now();
    if let Some(claim) = &new.idempotency {
        let existing: Option<(String, String, i64)> = conn
            .prepare_cached(
                "SELECT body_hash, run_id, expires_at FROM idempotency_keys WHERE key = ?1",
            )
            .and_then(|mut s| {
                s.query_row([&claim.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
            })
            .map_err(unavailable)?;
        match existing {
            Some((hash, run_id, expires)) if expires > ms(at) => {
                if hash != claim.body_hash {
                    return Err(StoreError::Conflict(format!(
                        "Idempotency-Key {:?} was already used with a different request body",
                        claim.key
                    )));
                }
                return Ok(CreatedRun {
                    run: load_run(conn, &run_id)?,
                    created: false,
                    logs: Vec::new(),
                });
            }
            Some(_) => {
                conn.execute("DELETE FROM idempotency_keys WHERE key = ?1", [&claim.key])
                    .map_err(unavailable)?;
            }
            None => {}
        }
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (key, body_hash, run_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![claim.key, claim.body_hash, new.id, ms(claim.expires_at)]))
        .map_err(unavailable)?;
    }
    if let Some(fire) = &new.schedule {
        super::triggers::fire_schedule(conn, fire, &new.id)?;
    }
    let (owner, lease) = match &new.owner {
        Some(l) => (
            Some(l.owner.as_str()),
            Some(ms(at) + l.ttl.as_millis() as i64),
        ),
        None => (None, None),
    };
    let inserted = conn
        .prepare_cached(
            "INSERT INTO runs (id, workflow_id, workflow_version, status, current_step, context, \
             created_at, updated_at, owner, lease_expires_at, parent_run_id, extra, budget, \
             trigger_info) \
             VALUES (?1, ?2, ?3, 'PENDING', 0, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .and_then(|mut s| {
            s.execute(params![
                new.id,
                new.workflow_id,
                new.workflow_version,
                to_json(&new.context),
                ms(at),
                owner,
                lease,
                new.parent.as_ref().map(|(id, _)| id.clone()),
                new.run_extra().map(|e| to_json(&e)),
                new.budget.as_ref().map(to_json),
                new.trigger.as_ref().map(to_json),
            ])
        });
    match inserted {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(StoreError::Conflict(format!(
                "run {} already exists",
                new.id
            )));
        }
        other => other.map_err(unavailable)?,
    };
    for (idx, step) in new.steps.iter().enumerate() {
        put_step(conn, &new.id, idx, step, StepWrite::Insert)?;
    }
    let (entries, events) = (
        std::mem::take(&mut new.logs),
        std::mem::take(&mut new.events),
    );
    let logs = append_seq(conn, &new.id, entries, events, &new.workflow_id)?;
    let run = new.into_run(at);
    Ok(CreatedRun {
        run,
        created: true,
        logs,
    })
}

/// Writes log entries and hook events for a run outside a head update, numbering them.
fn append_seq(
    conn: &Connection,
    run_id: &str,
    logs: Vec<NewLogEntry>,
    events: Vec<NewEvent>,
    workflow_id: &str,
) -> Result<Vec<LogEntry>, StoreError> {
    if logs.is_empty() && events.is_empty() {
        return Ok(Vec::new());
    }
    let (log_seq, event_seq): (i64, i64) = conn
        .prepare_cached(
            "UPDATE runs SET log_seq = log_seq + ?2, event_seq = event_seq + ?3 WHERE id = ?1 \
             RETURNING log_seq, event_seq",
        )
        .and_then(|mut s| {
            s.query_row(
                params![run_id, logs.len() as i64, events.len() as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .map_err(unavailable)?;
    let first_log = log_seq as u64 + 1 - logs.len() as u64;
    let first_event = event_seq as u64 + 1 - events.len() as u64;
    put_events(conn, run_id, workflow_id, first_event, events)?;
    put_logs(conn, run_id, first_log, logs)
}

fn put_events(
    conn: &Connection,
    run_id: &str,
    workflow_id: &str,
    first_seq: u64,
    events: Vec<NewEvent>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO events (run_id, workflow_id, seq, body, created_at, type) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(unavailable)?;
    for (i, event) in events.into_iter().enumerate() {
        stmt.execute(params![
            run_id,
            workflow_id,
            (first_seq + i as u64) as i64,
            to_json(&event),
            ms(event.ts),
            event.kind,
        ])
        .map_err(unavailable)?;
    }
    Ok(())
}

/// Applies a guarded transition. It refuses only before its first write (the guard is
/// checked against the row it reads first); every later error is a database failure, so
/// the writer runs it without a savepoint of its own.
pub fn commit(conn: &Connection, tx: Transition) -> Result<Committed, StoreError> {
    let at = now();
    // Read before writing: the guard is checked against the row (the writer is the store's
    // only one, so nothing changes it before the update), its counters number the new log
    // entries and events, and the indexed head columns that keep their values are left out
    // of the `UPDATE` (SQLite rewrites an index's entry whenever one of its columns is set,
    // to a new value or not; `status` alone is in two indexes, and most steps change
    // neither it nor the times).
    let Some(before) = conn
        .prepare_cached(
            "SELECT rev, log_seq, event_seq, workflow_id, status, finished_at, approval_deadline, \
             owner FROM runs WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([&tx.run_id], |r| {
                Ok(Before {
                    rev: r.get(0)?,
                    log_seq: r.get(1)?,
                    event_seq: r.get(2)?,
                    workflow_id: r.get(3)?,
                    status: r.get(4)?,
                    finished_at: r.get(5)?,
                    approval_deadline: r.get(6)?,
                    owner: r.get(7)?,
                })
            })
            .optional()
        })
        .map_err(unavailable)?
    else {
        return Err(StoreError::NotFound(format!("run {}", tx.run_id)));
    };
    let owner = before.owner.as_deref();
    if let Some(refused) = guard_refusal(&tx.run_id, &tx.guard, &before.status, before.rev, owner) {
        return Err(refused);
    }
    let mut sql = String::from(
        "UPDATE runs SET rev = rev + 1, updated_at = ?1, log_seq = log_seq + ?2, event_seq = event_seq + ?3",
    );
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![
        Box::new(ms(at)),
        Box::new(tx.logs.len() as i64),
        Box::new(tx.events.len() as i64),
    ];
    let mut push = |sql: &mut String, column: &str, value: Box<dyn rusqlite::ToSql>| {
        args.push(value);
        sql.push_str(", ");
        sql.push_str(column);
        push_mark(sql, " = ?", args.len());
    };
    if let Some(head) = &tx.head {
        if head.status.as_str() != before.status {
            push(&mut sql, "status", Box::new(head.status.as_str()));
        }
        push(&mut sql, "current_step", Box::new(head.current_step as i64));
        push(&mut sql, "error", Box::new(head.error.clone()));
        push(&mut sql, "usage", Box::new(to_json(&head.usage)));
        push(&mut sql, "started_at", Box::new(head.started_at.map(ms)));
        let finished_at = head.finished_at.map(ms);
        if finished_at != before.finished_at {
            push(&mut sql, "finished_at", Box::new(finished_at));
        }
        push(&mut sql, "active_ms", Box::new(head.active_ms as i64));
        let wake_at = head.wake_at.map(ms);
        if wake_at != before.approval_deadline {
            push(&mut sql, "approval_deadline", Box::new(wake_at));
        }
        let extra = (!head.extra.is_empty()).then(|| to_json(&head.extra));
        push(&mut sql, "extra", Box::new(extra));
    }
    if let Some(context) = &tx.context {
        push(&mut sql, "context", Box::new(to_json(context)));
    }
    if let Some(rerun) = &tx.rerun {
        push(&mut sql, "retries", Box::new(to_json(&rerun.retries)));
        push(
            &mut sql,
            "workflow_version",
            Box::new(i64::from(rerun.workflow_version)),
        );
        push(
            &mut sql,
            "budget",
            Box::new(rerun.budget.as_ref().map(to_json)),
        );
    }
    match &tx.owner {
        OwnerChange::Keep => {}
        OwnerChange::Renew(ttl) => {
            push(
                &mut sql,
                "lease_expires_at",
                Box::new(ms(at) + ttl.as_millis() as i64),
            );
            sql.push_str(", left_cleanly = 0");
        }
        OwnerChange::Take(lease) => {
            push(&mut sql, "owner", Box::new(lease.owner.clone()));
            push(
                &mut sql,
                "lease_expires_at",
                Box::new(ms(at) + lease.ttl.as_millis() as i64),
            );
            sql.push_str(", left_cleanly = 0");
        }
        OwnerChange::Release => {
            sql.push_str(", owner = NULL, lease_expires_at = NULL");
        }
        OwnerChange::Leave => {
            sql.push_str(", owner = NULL, lease_expires_at = NULL, left_cleanly = 1");
        }
    }
    args.push(Box::new(tx.run_id.clone()));
    push_mark(&mut sql, " WHERE id = ?", args.len());
    // No RETURNING: the new numbers follow from the row read above (and SQLite builds an
    // ephemeral table for RETURNING, which costs more than that read).
    let params: Vec<&dyn rusqlite::ToSql> = args.iter().map(|b| b.as_ref()).collect();
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.execute(params.as_slice()))
        .map_err(unavailable)?;
    let rev = before.rev + 1;
    let log_seq = before.log_seq + tx.logs.len() as i64;
    let event_seq = before.event_seq + tx.events.len() as i64;
    let workflow_id = before.workflow_id;
    if let Some(rerun) = &tx.rerun {
        conn.prepare_cached("DELETE FROM step_runs WHERE run_id = ?1 AND idx >= ?2")
            .and_then(|mut s| s.execute(params![tx.run_id, rerun.steps as i64]))
            .map_err(unavailable)?;
    }
    for (idx, step) in &tx.steps {
        put_step(conn, &tx.run_id, *idx, step, StepWrite::Update)?;
    }
    for approval in &tx.approvals {
        conn.prepare_cached(
            "INSERT INTO approvals (run_id, n, step, decision, by_name, at, comment, input) \
             VALUES (?1, (SELECT COALESCE(MAX(n), 0) + 1 FROM approvals WHERE run_id = ?1), \
             ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                tx.run_id,
                approval.step,
                approval.decision.as_str(),
                approval.by,
                ms(approval.at),
                approval.comment,
                approval.input.as_ref().map(to_json),
            ])
        })
        .map_err(unavailable)?;
    }
    let first_event = event_seq as u64 + 1 - tx.events.len() as u64;
    put_events(conn, &tx.run_id, &workflow_id, first_event, tx.events)?;
    let first_log = log_seq as u64 + 1 - tx.logs.len() as u64;
    let logs = put_logs(conn, &tx.run_id, first_log, tx.logs)?;
    super::tasks::apply_ops(conn, &tx.tasks)?;
    Ok(Committed {
        rev: rev as u64,
        at,
        logs,
    })
}

/// What [`commit`] reads of a run's row before changing it.
struct Before {
    rev: i64,
    log_seq: i64,
    event_seq: i64,
    workflow_id: String,
    status: String,
    finished_at: Option<i64>,
    approval_deadline: Option<i64>,
    owner: Option<String>,
}

/// Appends `text` and then parameter number `n` (the commit builds its statement for each
/// transition: `format!` there was 2 % of a step's instructions).
fn push_mark(sql: &mut String, text: &str, n: usize) {
    sql.push_str(text);
    push_number(sql, n);
}

fn push_number(sql: &mut String, n: usize) {
    if n >= 10 {
        push_number(sql, n / 10);
    }
    sql.push(char::from(b'0' + (n % 10) as u8));
}

/// Claims runs that need an owner.
pub fn claim(
    conn: &Connection,
    owner: &str,
    ttl_ms: i64,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let at = ms(now());
    let mut stmt = conn
        .prepare_cached(
            "UPDATE runs SET owner = ?1, lease_expires_at = ?2, rev = rev + 1 WHERE id IN ( \
               SELECT id FROM runs WHERE status IN ('PENDING', 'RUNNING') \
               AND (owner IS NULL OR lease_expires_at < ?3) ORDER BY id LIMIT ?4) \
             RETURNING id",
        )
        .map_err(unavailable)?;
    let ids = stmt
        .query_map(params![owner, at + ttl_ms, at, limit as i64], |r| r.get(0))
        .map_err(unavailable)?
        .collect::<Result<Vec<String>, _>>()
        .map_err(unavailable)?;
    Ok(ids)
}

/// Appends client lines within the per-run limit.
pub fn append_client_logs(
    conn: &Connection,
    run_id: &str,
    entries: Vec<NewLogEntry>,
    limits: LogLimits,
) -> Result<Vec<LogEntry>, StoreError> {
    let n = entries.len() as i64;
    let seq: Option<i64> = conn
        .prepare_cached(
            "UPDATE runs SET log_seq = log_seq + ?2 WHERE id = ?1 AND log_seq + ?2 <= ?3 RETURNING log_seq",
        )
        .and_then(|mut s| s.query_row(params![run_id, n, limits.max_entries as i64], |r| r.get(0)).optional())
        .map_err(unavailable)?;
    match seq {
        Some(last) => put_logs(conn, run_id, (last - n + 1) as u64, entries),
        None => {
            let held: Option<i64> = conn
                .prepare_cached("SELECT log_seq FROM runs WHERE id = ?1")
                .and_then(|mut s| s.query_row([run_id], |r| r.get(0)).optional())
                .map_err(unavailable)?;
            Err(match held {
                None => StoreError::NotFound(format!("run {run_id}")),
                Some(held) => StoreError::Conflict(format!(
                    "the log of run {run_id} holds {held} of at most {} entries; {n} more do not fit",
                    limits.max_entries
                )),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_marks_are_written_as_format_would() {
        for n in [1, 9, 10, 11, 19, 20, 99, 100, 123, 999, 1000] {
            let mut sql = String::from("x");
            push_mark(&mut sql, " = ?", n);
            assert_eq!(sql, format!("x = ?{n}"));
        }
    }
}
