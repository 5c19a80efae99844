//! Guarded transitions of the PostgreSQL store in one statement each.
//!
//! The guarded `UPDATE … RETURNING` of the run head and the inserts of its step rows,
//! approvals, log entries and hook events are data-modifying CTEs of one statement: the
//! children are joined to the update's result, so when the guard refuses, nothing at all
//! is written, and a commit costs one round trip whatever it changes. Sequence numbers
//! come from the updated counters (`log_seq`, `event_seq`) within the statement.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use crate::model::{StepExtra, StepRun, now};
use crate::store::encoding::{guard_conflict, status_condition};
use crate::store::{Committed, Guard, OwnerChange, StoreError, Transition};

use super::notify::Outgoing;
use super::rows::{get, ms, to_json};
use super::writer::{Done, Fault};

type Args = Vec<Box<dyn ToSql + Sync + Send>>;

/// Adds `value` as the next parameter and returns its placeholder.
fn param(args: &mut Args, value: impl ToSql + Sync + Send + 'static) -> String {
    args.push(Box::new(value));
    format!("${}", args.len())
}

/// Applies a guarded transition.
pub async fn commit<C: GenericClient>(c: &C, tx: Transition) -> Result<Done<Committed>, Fault> {
    let at = now();
    let mut args: Args = Vec::new();
    let (n_logs, n_events) = (tx.logs.len() as i64, tx.events.len() as i64);
    let mut sets = vec![
        "rev = rev + 1".to_owned(),
        format!("updated_at = {}", param(&mut args, ms(at))),
        format!("log_seq = log_seq + {}", param(&mut args, n_logs)),
        format!("event_seq = event_seq + {}", param(&mut args, n_events)),
    ];
    if let Some(head) = &tx.head {
        sets.push(format!(
            "status = {}",
            param(&mut args, head.status.as_str())
        ));
        let extra = (!head.extra.is_empty()).then(|| to_json(&head.extra));
        let values: [(&str, Box<dyn ToSql + Sync + Send>); 8] = [
            ("current_step", Box::new(head.current_step as i64)),
            ("error", Box::new(head.error.clone())),
            ("usage", Box::new(to_json(&head.usage))),
            ("started_at", Box::new(head.started_at.map(ms))),
            ("finished_at", Box::new(head.finished_at.map(ms))),
            ("active_ms", Box::new(head.active_ms as i64)),
            ("approval_deadline", Box::new(head.wake_at.map(ms))),
            ("extra", Box::new(extra)),
        ];
        for (column, value) in values {
            args.push(value);
            sets.push(format!("{column} = ${}", args.len()));
        }
    }
    if let Some(context) = &tx.context {
        sets.push(format!("context = {}", param(&mut args, to_json(context))));
    }
    if let Some(rerun) = &tx.rerun {
        sets.push(format!(
            "retries = {}",
            param(&mut args, to_json(&rerun.retries))
        ));
        sets.push(format!(
            "workflow_version = {}",
            param(&mut args, i64::from(rerun.workflow_version))
        ));
        sets.push(format!(
            "budget = {}",
            param(&mut args, rerun.budget.as_ref().map(to_json))
        ));
    }
    match &tx.owner {
        OwnerChange::Keep => {}
        OwnerChange::Renew(ttl) => {
            let until = ms(at) + ttl.as_millis() as i64;
            sets.push(format!("lease_expires_at = {}", param(&mut args, until)));
            sets.push("left_cleanly = FALSE".into());
        }
        OwnerChange::Take(lease) => {
            sets.push(format!("owner = {}", param(&mut args, lease.owner.clone())));
            let until = ms(at) + lease.ttl.as_millis() as i64;
            sets.push(format!("lease_expires_at = {}", param(&mut args, until)));
            sets.push("left_cleanly = FALSE".into());
        }
        OwnerChange::Release => sets.push("owner = NULL, lease_expires_at = NULL".into()),
        OwnerChange::Leave => {
            sets.push("owner = NULL, lease_expires_at = NULL, left_cleanly = TRUE".into())
        }
    }
    let run_id = param(&mut args, tx.run_id.clone());
    let mut sql = format!(
        "WITH upd AS (UPDATE runs SET {} WHERE id = {run_id}",
        sets.join(", ")
    );
    append_guard(&mut sql, &mut args, &tx.guard);
    sql.push_str(
        " RETURNING rev, log_seq, event_seq, workflow_id, status, owner IS NULL AS unowned)",
    );
    sql.push_str(&children(&mut args, &run_id, &tx));
    sql.push_str(" SELECT rev, log_seq, workflow_id, status, unowned FROM upd");
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let stmt = c.prepare_cached(&sql).await?;
    let Some(row) = c.query_opt(&stmt, &params).await? else {
        return Err(guard_failure(c, &tx.run_id, &tx.guard).await.into());
    };
    super::tasks::apply_ops(c, &tx.tasks).await?;
    let queues = tx
        .tasks
        .iter()
        .filter_map(|op| op.fills().map(str::to_owned))
        .collect();
    let (rev, log_seq, status, unowned): (i64, i64, String, bool) =
        (get(&row, 0)?, get(&row, 1)?, get(&row, 3)?, get(&row, 4)?);
    let first_log = (log_seq - n_logs + 1) as u64;
    let logs = tx
        .logs
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.into_entry(first_log + i as u64))
        .collect();
    let claimable = unowned && matches!(status.as_str(), "PENDING" | "RUNNING");
    Ok(Done {
        value: Committed {
            rev: rev as u64,
            at,
            logs,
        },
        notices: vec![Outgoing {
            run_id: tx.run_id,
            rev: Some(rev as u64),
            logs: (n_logs > 0).then_some((first_log, log_seq as u64)),
            claimable,
            queues,
        }],
    })
}

/// The CTEs that write a transition's child rows, each joined to `upd`.
fn children(args: &mut Args, run_id: &str, tx: &Transition) -> String {
    let mut sql = String::new();
    if let Some(rerun) = &tx.rerun {
        // A re-run on a version with fewer steps: the rows past them go.
        let steps = param(args, rerun.steps as i64);
        sql.push_str(&format!(
            ", trimmed AS (DELETE FROM step_runs WHERE run_id = {run_id} AND idx >= {steps} \
             AND EXISTS (SELECT 1 FROM upd))"
        ));
    }
    if !tx.steps.is_empty() {
        // One row per index (the last one given), as ON CONFLICT may touch a row once.
        let steps: BTreeMap<usize, &StepRun> = tx.steps.iter().map(|(i, s)| (*i, s)).collect();
        let p = step_arrays(args, &steps);
        sql.push_str(&format!(
            ", steps AS (INSERT INTO step_runs (run_id, idx, step_id, name, action, status, \
               error, output, http_code, attempts, started_at, finished_at, waiting_since, \
               truncated, extra, interruptions) \
             SELECT {run_id}, u.* FROM upd, UNNEST({p}) AS u \
             ON CONFLICT (run_id, idx) DO UPDATE SET step_id = excluded.step_id, \
               name = excluded.name, action = excluded.action, status = excluded.status, \
               error = excluded.error, output = excluded.output, http_code = excluded.http_code, \
               attempts = excluded.attempts, started_at = excluded.started_at, \
               finished_at = excluded.finished_at, waiting_since = excluded.waiting_since, \
               truncated = excluded.truncated, extra = excluded.extra, \
               interruptions = excluded.interruptions)"
        ));
    }
    if !tx.approvals.is_empty() {
        let a = &tx.approvals;
        let p = [
            param(args, a.iter().map(|a| a.step.clone()).collect::<Vec<_>>()) + "::text[]",
            param(
                args,
                a.iter().map(|a| a.decision.as_str()).collect::<Vec<_>>(),
            ) + "::text[]",
            param(args, a.iter().map(|a| a.by.clone()).collect::<Vec<_>>()) + "::text[]",
            param(args, a.iter().map(|a| ms(a.at)).collect::<Vec<_>>()) + "::bigint[]",
            param(
                args,
                a.iter().map(|a| a.comment.clone()).collect::<Vec<_>>(),
            ) + "::text[]",
            param(
                args,
                a.iter()
                    .map(|a| a.input.as_ref().map(to_json))
                    .collect::<Vec<_>>(),
            ) + "::text[]",
        ]
        .join(", ");
        sql.push_str(&format!(
            ", approvals AS (INSERT INTO approvals (run_id, n, step, decision, by_name, at, comment, input) \
             SELECT {run_id}, (SELECT COALESCE(MAX(n), 0) FROM approvals WHERE run_id = {run_id}) + u.o, \
               u.s, u.d, u.b, u.a, u.cm, u.i \
             FROM upd, UNNEST({p}) WITH ORDINALITY AS u(s, d, b, a, cm, i, o))"
        ));
    }
    if !tx.logs.is_empty() {
        let l = &tx.logs;
        let n = param(args, l.len() as i64);
        let p = [
            param(args, l.iter().map(|e| ms(e.ts)).collect::<Vec<_>>()) + "::bigint[]",
            param(args, l.iter().map(|e| e.level.as_str()).collect::<Vec<_>>()) + "::text[]",
            param(
                args,
                l.iter().map(|e| e.source.as_str()).collect::<Vec<_>>(),
            ) + "::text[]",
            param(args, l.iter().map(|e| e.step.clone()).collect::<Vec<_>>()) + "::text[]",
            param(
                args,
                l.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
            ) + "::text[]",
            param(
                args,
                l.iter()
                    .map(|e| e.status.as_ref().map(to_json))
                    .collect::<Vec<_>>(),
            ) + "::text[]",
        ]
        .join(", ");
        sql.push_str(&format!(
            ", logs AS (INSERT INTO run_logs (run_id, seq, ts, level, source, step, message, status) \
             SELECT {run_id}, upd.log_seq - {n} + u.o, u.ts, u.level, u.source, u.step, u.message, u.status \
             FROM upd, UNNEST({p}) WITH ORDINALITY AS u(ts, level, source, step, message, status, o))"
        ));
    }
    if !tx.events.is_empty() {
        let n = param(args, tx.events.len() as i64);
        let bodies: Vec<String> = tx.events.iter().map(to_json).collect();
        let created: Vec<i64> = tx.events.iter().map(|e| ms(e.ts)).collect();
        let p = param(args, bodies) + "::text[], " + &param(args, created) + "::bigint[]";
        sql.push_str(&format!(
            ", events AS (INSERT INTO events (run_id, workflow_id, seq, body, created_at) \
             SELECT {run_id}, upd.workflow_id, upd.event_seq - {n} + u.o, u.body, u.at \
             FROM upd, UNNEST({p}) WITH ORDINALITY AS u(body, at, o))"
        ));
    }
    sql
}

/// Parameters of step rows as typed arrays, in column order after `run_id`.
fn step_arrays(args: &mut Args, steps: &BTreeMap<usize, &StepRun>) -> String {
    let s = || steps.iter();
    [
        param(args, s().map(|(i, _)| *i as i64).collect::<Vec<_>>()) + "::bigint[]",
        param(
            args,
            s().map(|(_, s)| s.step_id.clone()).collect::<Vec<_>>(),
        ) + "::text[]",
        param(args, s().map(|(_, s)| s.name.clone()).collect::<Vec<_>>()) + "::text[]",
        param(args, s().map(|(_, s)| s.action.clone()).collect::<Vec<_>>()) + "::text[]",
        param(
            args,
            s().map(|(_, s)| s.status.as_str()).collect::<Vec<_>>(),
        ) + "::text[]",
        param(args, s().map(|(_, s)| s.error.clone()).collect::<Vec<_>>()) + "::text[]",
        param(
            args,
            s().map(|(_, s)| s.output.as_ref().map(to_json))
                .collect::<Vec<_>>(),
        ) + "::text[]",
        param(
            args,
            s().map(|(_, s)| s.http_code.map(i64::from))
                .collect::<Vec<_>>(),
        ) + "::bigint[]",
        param(
            args,
            s().map(|(_, s)| to_json(&s.attempts)).collect::<Vec<_>>(),
        ) + "::text[]",
        param(
            args,
            s().map(|(_, s)| s.started_at.map(ms)).collect::<Vec<_>>(),
        ) + "::bigint[]",
        param(
            args,
            s().map(|(_, s)| s.finished_at.map(ms)).collect::<Vec<_>>(),
        ) + "::bigint[]",
        param(
            args,
            s().map(|(_, s)| s.waiting_since.map(ms))
                .collect::<Vec<_>>(),
        ) + "::bigint[]",
        param(
            args,
            s().map(|(_, s)| s.output_truncated).collect::<Vec<_>>(),
        ) + "::bool[]",
        param(
            args,
            s().map(|(_, s)| StepExtra::of(s).as_ref().map(to_json))
                .collect::<Vec<_>>(),
        ) + "::text[]",
        param(
            args,
            s().map(|(_, s)| i64::from(s.interruptions))
                .collect::<Vec<_>>(),
        ) + "::bigint[]",
    ]
    .join(", ")
}

fn append_guard(sql: &mut String, args: &mut Args, guard: &Guard) {
    if let Some(rev) = guard.rev {
        args.push(Box::new(rev as i64));
        sql.push_str(&format!(" AND rev = ${}", args.len()));
    }
    if let Some(owner) = &guard.owner {
        args.push(Box::new(owner.clone()));
        sql.push_str(&format!(" AND owner = ${}", args.len()));
    }
    sql.push_str(&status_condition(guard));
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
            guard_conflict(run_id, guard, &status, rev, owner.as_deref())
        }
    }
}
