//! Conversions between PostgreSQL rows and the model's records, and the reads and writes
//! of child rows (steps, approvals, logs) shared by the store's operations.
//!
//! Child rows are read for many runs in one query each (`= ANY($1)`) and written for
//! many rows in one statement each (`UNNEST`), so no operation costs a round trip per row.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use serde_json::{Map, Value};
use tokio_postgres::Row;

use crate::model::{
    Approval, LogEntry, NewLogEntry, Run, RunControl, StepExtra, StepRun, Timestamp,
    WorkflowVersion,
};
use crate::store::StoreError;
pub use crate::store::encoding::{from_ms, json, ms, parse, to_json};

use super::db_error;

/// Reads column `i`, mapping a type mismatch to `Corrupt`.
pub fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::corrupt_by(format!("column {i}"), e))
}

fn opt_ms(row: &Row, i: usize) -> Result<Option<Timestamp>, StoreError> {
    Ok(get::<Option<i64>>(row, i)?.map(from_ms))
}

pub const VERSION_COLUMNS: &str =
    "workflow_id, version, name, definition, created_at, created_by, restored_from";

/// Decodes a row of [`VERSION_COLUMNS`].
pub fn version_row(row: &Row) -> Result<WorkflowVersion, StoreError> {
    Ok(WorkflowVersion {
        id: get(row, 0)?,
        version: get::<i64>(row, 1)? as u32,
        name: get(row, 2)?,
        definition: json(get::<&str>(row, 3)?)?,
        created_at: from_ms(get(row, 4)?),
        created_by: get(row, 5)?,
        restored_from: get::<Option<i64>>(row, 6)?.map(|v| v as u32),
    })
}

pub const RUN_COLUMNS: &str = "id, workflow_id, workflow_version, status, current_step, context, \
     error, usage, created_at, updated_at, started_at, finished_at, rev, approval_deadline, active_ms, \
     parent_run_id, extra, retries, budget, trigger_info, left_cleanly";

pub(super) fn run_row(row: &Row) -> Result<Run, StoreError> {
    Ok(Run {
        id: get(row, 0)?,
        workflow_id: get(row, 1)?,
        workflow_version: get::<i64>(row, 2)? as u32,
        status: parse(get::<&str>(row, 3)?)?,
        current_step: get::<i64>(row, 4)? as usize,
        parent_run_id: get(row, 15)?,
        context: json::<Map<String, Value>>(get::<&str>(row, 5)?)?,
        steps: Vec::new(),
        error: get(row, 6)?,
        approvals: Vec::new(),
        usage: json(get::<&str>(row, 7)?)?,
        budget: get::<Option<&str>>(row, 18)?.map(json).transpose()?,
        retries: json(get::<&str>(row, 17)?)?,
        created_at: from_ms(get(row, 8)?),
        updated_at: from_ms(get(row, 9)?),
        started_at: opt_ms(row, 10)?,
        finished_at: opt_ms(row, 11)?,
        trigger: get::<Option<&str>>(row, 19)?.map(json).transpose()?,
        control: RunControl {
            rev: get::<i64>(row, 12)? as u64,
            wake_at: opt_ms(row, 13)?,
            active_ms: get::<i64>(row, 14)? as u64,
            extra: get::<Option<&str>>(row, 16)?
                .map(json)
                .transpose()?
                .unwrap_or_default(),
            left_cleanly: get(row, 20)?,
        },
    })
}

const STEP_COLUMNS: &str = "run_id, idx, step_id, name, action, status, error, output, http_code, \
     attempts, started_at, finished_at, waiting_since, truncated, extra, interruptions";

pub(super) fn step_row(row: &Row) -> Result<(String, StepRun), StoreError> {
    let extra: StepExtra = get::<Option<&str>>(row, 14)?
        .map(json)
        .transpose()?
        .unwrap_or_default();
    let mut step = StepRun {
        step_id: get(row, 2)?,
        name: get(row, 3)?,
        action: get(row, 4)?,
        status: parse(get::<&str>(row, 5)?)?,
        error: get(row, 6)?,
        output: get::<Option<&str>>(row, 7)?.map(json).transpose()?,
        http_code: get::<Option<i64>>(row, 8)?.map(|c| c as u16),
        attempts: json(get::<&str>(row, 9)?)?,
        started_at: opt_ms(row, 10)?,
        finished_at: opt_ms(row, 11)?,
        waiting_since: opt_ms(row, 12)?,
        output_truncated: get(row, 13)?,
        waiting: None,
        items: None,
        over: None,
        interruptions: get::<i64>(row, 15)? as u32,
    };
    extra.apply(&mut step);
    Ok((get(row, 0)?, step))
}

fn approval_row(row: &Row) -> Result<(String, Approval), StoreError> {
    let approval = Approval {
        step: get(row, 1)?,
        decision: parse(get::<&str>(row, 2)?)?,
        by: get(row, 3)?,
        at: from_ms(get(row, 4)?),
        comment: get(row, 5)?,
        input: get::<Option<&str>>(row, 6)?.map(json).transpose()?,
    };
    Ok((get(row, 0)?, approval))
}

/// Reads one run with its steps and approvals (three pipelined queries).
pub async fn load_run<C: GenericClient>(client: &C, id: &str) -> Result<Run, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
    let row = client.query_opt(&sql, &[&id]).await.map_err(db_error)?;
    let run = run_row(&row.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?)?;
    let mut runs = vec![run];
    attach_children(client, &mut runs).await?;
    runs.pop()
        .ok_or_else(|| StoreError::NotFound(format!("run {id}")))
}

/// Reads runs with `sql` (over [`RUN_COLUMNS`]) and their steps and approvals, streaming the
/// rows and stopping once the runs' contexts and step outputs pass `budget` bytes: the runs
/// read whole (at least one), and whether it stopped early.
pub async fn load_runs_bounded<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    budget: usize,
) -> Result<(Vec<Run>, bool), StoreError> {
    use futures::StreamExt;
    // Each row stream is dropped before the next query: the connection holds that query's
    // answers back while a live stream does not take them.
    let stmt = client.prepare_cached(sql).await.map_err(db_error)?;
    let (mut runs, mut used, mut cut) = (Vec::<Run>::new(), 0, false);
    {
        let rows = client
            .query_raw(&stmt, params.iter().copied())
            .await
            .map_err(db_error)?;
        futures::pin_mut!(rows);
        while let Some(row) = rows.next().await {
            let row = row.map_err(db_error)?;
            used += text_len(&row, 5);
            if used > budget && !runs.is_empty() {
                cut = true;
                break;
            }
            runs.push(run_row(&row)?);
        }
    }
    if runs.is_empty() {
        return Ok((runs, cut));
    }
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let steps_sql = format!(
        "SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = ANY($1) \
         ORDER BY run_id DESC, idx DESC"
    );
    let stmt = client.prepare_cached(&steps_sql).await.map_err(db_error)?;
    let mut steps: Vec<(usize, StepRun)> = Vec::new();
    let mut keep = runs.len();
    {
        let rows = client.query_raw(&stmt, [&ids]).await.map_err(db_error)?;
        futures::pin_mut!(rows);
        let mut at = 0;
        while let Some(row) = rows.next().await {
            let row = row.map_err(db_error)?;
            let (run_id, step) = step_row(&row)?;
            while at < ids.len() && ids[at] != run_id {
                at += 1;
            }
            if at == ids.len() {
                break;
            }
            used += text_len(&row, 7) + text_len(&row, 9);
            if used > budget && at > 0 {
                keep = at;
                cut = true;
                break;
            }
            steps.push((at, step));
        }
    }
    drop(ids);
    runs.truncate(keep);
    // Last step first, as the embedded store reads them.
    for (at, step) in steps.into_iter().rev() {
        if at < keep {
            runs[at].steps.push(step);
        }
    }
    attach_approvals(client, &mut runs).await?;
    Ok((runs, cut))
}

/// The length of text column `i` (0 when NULL).
fn text_len(row: &Row, i: usize) -> usize {
    row.try_get::<_, Option<&str>>(i)
        .ok()
        .flatten()
        .map_or(0, str::len)
}

async fn attach_approvals<C: GenericClient>(
    client: &C,
    runs: &mut [Run],
) -> Result<(), StoreError> {
    if runs.is_empty() {
        return Ok(());
    }
    let position: HashMap<String, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let approvals_sql = "SELECT run_id, step, decision, by_name, at, comment, input FROM approvals \
                         WHERE run_id = ANY($1) ORDER BY run_id, n";
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
    let approvals = client
        .query(approvals_sql, &params)
        .await
        .map_err(db_error)?;
    for row in &approvals {
        let (run_id, approval) = approval_row(row)?;
        if let Some(&i) = position.get(&run_id) {
            runs[i].approvals.push(approval);
        }
    }
    Ok(())
}

async fn attach_children<C: GenericClient>(client: &C, runs: &mut [Run]) -> Result<(), StoreError> {
    if runs.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let steps_sql =
        format!("SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = ANY($1) ORDER BY run_id, idx");
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
    let steps = async { client.query(&steps_sql, &params).await.map_err(db_error) };
    let (steps, ()) = futures::try_join!(steps, attach_approvals(client, runs))?;
    let position: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for row in &steps {
        let (run_id, step) = step_row(row)?;
        if let Some(&i) = position.get(run_id.as_str()) {
            runs[i].steps.push(step);
        }
    }
    Ok(())
}

/// Inserts or replaces step rows by index, in one statement.
pub async fn put_steps<C: GenericClient>(
    client: &C,
    run_id: &str,
    steps: &[(usize, &StepRun)],
) -> Result<(), StoreError> {
    if steps.is_empty() {
        return Ok(());
    }
    let idx: Vec<i64> = steps.iter().map(|(i, _)| *i as i64).collect();
    let step_id: Vec<&str> = steps.iter().map(|(_, s)| s.step_id.as_str()).collect();
    let name: Vec<&str> = steps.iter().map(|(_, s)| s.name.as_str()).collect();
    let action: Vec<&str> = steps.iter().map(|(_, s)| s.action.as_str()).collect();
    let status: Vec<&str> = steps.iter().map(|(_, s)| s.status.as_str()).collect();
    let error: Vec<Option<&str>> = steps.iter().map(|(_, s)| s.error.as_deref()).collect();
    let output: Vec<Option<String>> = steps
        .iter()
        .map(|(_, s)| s.output.as_ref().map(to_json))
        .collect();
    let http: Vec<Option<i64>> = steps
        .iter()
        .map(|(_, s)| s.http_code.map(i64::from))
        .collect();
    let attempts: Vec<String> = steps.iter().map(|(_, s)| to_json(&s.attempts)).collect();
    let started: Vec<Option<i64>> = steps.iter().map(|(_, s)| s.started_at.map(ms)).collect();
    let finished: Vec<Option<i64>> = steps.iter().map(|(_, s)| s.finished_at.map(ms)).collect();
    let waiting: Vec<Option<i64>> = steps.iter().map(|(_, s)| s.waiting_since.map(ms)).collect();
    let truncated: Vec<bool> = steps.iter().map(|(_, s)| s.output_truncated).collect();
    let extra: Vec<Option<String>> = steps
        .iter()
        .map(|(_, s)| StepExtra::of(s).as_ref().map(to_json))
        .collect();
    let interruptions: Vec<i64> = steps
        .iter()
        .map(|(_, s)| i64::from(s.interruptions))
        .collect();
    let sql = format!(
        "INSERT INTO step_runs ({STEP_COLUMNS}) \
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
           $7::text[], $8::text[], $9::bigint[], $10::text[], $11::bigint[], $12::bigint[], \
           $13::bigint[], $14::bool[], $15::text[], $16::bigint[]) \
         ON CONFLICT (run_id, idx) DO UPDATE SET step_id = excluded.step_id, name = excluded.name, \
           action = excluded.action, status = excluded.status, error = excluded.error, \
           output = excluded.output, http_code = excluded.http_code, attempts = excluded.attempts, \
           started_at = excluded.started_at, finished_at = excluded.finished_at, \
           waiting_since = excluded.waiting_since, truncated = excluded.truncated, \
           extra = excluded.extra, interruptions = excluded.interruptions"
    );
    let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
    client
        .execute(
            &stmt,
            &[
                &run_id,
                &idx,
                &step_id,
                &name,
                &action,
                &status,
                &error,
                &output,
                &http,
                &attempts,
                &started,
                &finished,
                &waiting,
                &truncated,
                &extra,
                &interruptions,
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Inserts log entries numbered from `first_seq`, in one statement.
pub async fn put_logs<C: GenericClient>(
    client: &C,
    run_id: &str,
    first_seq: u64,
    entries: Vec<NewLogEntry>,
) -> Result<Vec<LogEntry>, StoreError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let seq: Vec<i64> = (0..entries.len())
        .map(|i| (first_seq + i as u64) as i64)
        .collect();
    let ts: Vec<i64> = entries.iter().map(|e| ms(e.ts)).collect();
    let level: Vec<&str> = entries.iter().map(|e| e.level.as_str()).collect();
    let source: Vec<&str> = entries.iter().map(|e| e.source.as_str()).collect();
    let step: Vec<Option<&str>> = entries.iter().map(|e| e.step.as_deref()).collect();
    let message: Vec<&str> = entries.iter().map(|e| e.message.as_str()).collect();
    let status: Vec<Option<String>> = entries
        .iter()
        .map(|e| e.status.as_ref().map(to_json))
        .collect();
    let stmt = client
        .prepare_cached(
            "INSERT INTO run_logs (run_id, seq, ts, level, source, step, message, status) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $5::text[], \
               $6::text[], $7::text[], $8::text[])",
        )
        .await
        .map_err(db_error)?;
    client
        .execute(
            &stmt,
            &[
                &run_id, &seq, &ts, &level, &source, &step, &message, &status,
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.into_entry(first_seq + i as u64))
        .collect())
}

/// Decodes a `run_logs` row (`seq, ts, level, source, step, message, status`).
pub fn log_row(row: &Row) -> Result<LogEntry, StoreError> {
    Ok(LogEntry {
        seq: get::<i64>(row, 0)? as u64,
        ts: from_ms(get(row, 1)?),
        level: parse(get::<&str>(row, 2)?)?,
        source: parse(get::<&str>(row, 3)?)?,
        step: get(row, 4)?,
        message: get(row, 5)?,
        status: get::<Option<&str>>(row, 6)?.map(json).transpose()?,
    })
}
