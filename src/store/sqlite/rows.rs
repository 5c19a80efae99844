//! Conversions between SQLite rows and the model's records.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};

use crate::model::{Approval, LogEntry, Run, RunControl, StepExtra, StepRun, WorkflowVersion};
use crate::store::StoreError;
pub use crate::store::encoding::{from_ms, json, ms, parse, to_json};

use super::pool::unavailable;

pub const VERSION_COLUMNS: &str =
    "workflow_id, version, name, definition, created_at, created_by, restored_from";

pub fn version_row(row: &Row<'_>) -> rusqlite::Result<Result<WorkflowVersion, StoreError>> {
    let definition: String = row.get(3)?;
    Ok(json(&definition).map(|definition| WorkflowVersion {
        id: row.get(0).unwrap_or_default(),
        version: row.get(1).unwrap_or_default(),
        name: row.get(2).unwrap_or_default(),
        definition,
        created_at: from_ms(row.get(4).unwrap_or_default()),
        created_by: row.get(5).unwrap_or_default(),
        restored_from: row.get(6).unwrap_or_default(),
    }))
}

pub const RUN_COLUMNS: &str = "id, workflow_id, workflow_version, status, current_step, context, \
     error, usage, created_at, updated_at, started_at, finished_at, rev, approval_deadline, active_ms, \
     parent_run_id, extra, retries, budget, trigger_info, left_cleanly";

pub(super) fn run_row(row: &Row<'_>) -> rusqlite::Result<Result<Run, StoreError>> {
    let status: String = row.get(3)?;
    let context: String = row.get(5)?;
    let usage: String = row.get(7)?;
    let extra: Option<String> = row.get(16)?;
    let retries: String = row.get(17)?;
    let budget: Option<String> = row.get(18)?;
    let trigger: Option<String> = row.get(19)?;
    let decode = || -> Result<Run, StoreError> {
        Ok(Run {
            id: row.get(0).map_err(unavailable)?,
            workflow_id: row.get(1).map_err(unavailable)?,
            workflow_version: row.get(2).map_err(unavailable)?,
            status: parse(&status)?,
            current_step: row.get::<_, i64>(4).map_err(unavailable)? as usize,
            parent_run_id: row.get(15).map_err(unavailable)?,
            context: json::<Map<String, Value>>(&context)?,
            steps: Vec::new(),
            error: row.get(6).map_err(unavailable)?,
            approvals: Vec::new(),
            usage: json(&usage)?,
            budget: budget.as_deref().map(json).transpose()?,
            retries: json(&retries)?,
            created_at: from_ms(row.get(8).map_err(unavailable)?),
            updated_at: from_ms(row.get(9).map_err(unavailable)?),
            started_at: row
                .get::<_, Option<i64>>(10)
                .map_err(unavailable)?
                .map(from_ms),
            finished_at: row
                .get::<_, Option<i64>>(11)
                .map_err(unavailable)?
                .map(from_ms),
            trigger: trigger.as_deref().map(json).transpose()?,
            control: RunControl {
                rev: row.get::<_, i64>(12).map_err(unavailable)? as u64,
                wake_at: row
                    .get::<_, Option<i64>>(13)
                    .map_err(unavailable)?
                    .map(from_ms),
                active_ms: row.get::<_, i64>(14).map_err(unavailable)? as u64,
                extra: extra.as_deref().map(json).transpose()?.unwrap_or_default(),
                left_cleanly: row.get::<_, i64>(20).map_err(unavailable)? != 0,
            },
        })
    };
    Ok(decode())
}

const STEP_COLUMNS: &str = "run_id, idx, step_id, name, action, status, error, output, http_code, \
     attempts, started_at, finished_at, waiting_since, truncated, extra, interruptions";

/// Inserts a step row; `?1` and `?2` are its key, as in [`STEP_UPDATE`].
const STEP_INSERT: &str = "INSERT INTO step_runs (run_id, idx, step_id, name, action, status, \
     error, output, http_code, attempts, started_at, finished_at, waiting_since, truncated, extra, \
     interruptions) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

/// Rewrites a step row in place. A plain `UPDATE` rather than an upsert: an upsert first
/// tries the insert, finds the key taken, and seeks the row again to update it.
const STEP_UPDATE: &str = "UPDATE step_runs SET step_id = ?3, name = ?4, action = ?5, \
     status = ?6, error = ?7, output = ?8, http_code = ?9, attempts = ?10, started_at = ?11, \
     finished_at = ?12, waiting_since = ?13, truncated = ?14, extra = ?15, interruptions = ?16 \
     WHERE run_id = ?1 AND idx = ?2";

pub(super) fn step_row(row: &Row<'_>) -> rusqlite::Result<(String, Result<StepRun, StoreError>)> {
    let run_id: String = row.get(0)?;
    let status: String = row.get(5)?;
    let output: Option<String> = row.get(7)?;
    let attempts: String = row.get(9)?;
    let extra: Option<String> = row.get(14)?;
    let decode = || -> Result<StepRun, StoreError> {
        let extra: StepExtra = extra.as_deref().map(json).transpose()?.unwrap_or_default();
        let mut step = StepRun {
            step_id: row.get(2).map_err(unavailable)?,
            name: row.get(3).map_err(unavailable)?,
            action: row.get(4).map_err(unavailable)?,
            status: parse(&status)?,
            error: row.get(6).map_err(unavailable)?,
            output: output.as_deref().map(json).transpose()?,
            http_code: row.get(8).map_err(unavailable)?,
            attempts: json(&attempts)?,
            started_at: row
                .get::<_, Option<i64>>(10)
                .map_err(unavailable)?
                .map(from_ms),
            finished_at: row
                .get::<_, Option<i64>>(11)
                .map_err(unavailable)?
                .map(from_ms),
            waiting_since: row
                .get::<_, Option<i64>>(12)
                .map_err(unavailable)?
                .map(from_ms),
            output_truncated: row.get::<_, i64>(13).map_err(unavailable)? != 0,
            waiting: None,
            items: None,
            over: None,
            interruptions: row.get::<_, i64>(15).map_err(unavailable)? as u32,
        };
        extra.apply(&mut step);
        Ok(step)
    };
    Ok((run_id, decode()))
}

fn approval_row(row: &Row<'_>) -> rusqlite::Result<(String, Result<Approval, StoreError>)> {
    let run_id: String = row.get(0)?;
    let decision: String = row.get(2)?;
    let input: Option<String> = row.get(6)?;
    let decode = || -> Result<Approval, StoreError> {
        Ok(Approval {
            step: row.get(1).map_err(unavailable)?,
            decision: parse(&decision)?,
            by: row.get(3).map_err(unavailable)?,
            at: from_ms(row.get(4).map_err(unavailable)?),
            comment: row.get(5).map_err(unavailable)?,
            input: input.as_deref().map(json).transpose()?,
        })
    };
    Ok((run_id, decode()))
}

/// Reads one run with its steps and approvals.
pub fn load_run(conn: &Connection, id: &str) -> Result<Run, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
        .map_err(unavailable)?;
    let run = stmt
        .query_row([id], run_row)
        .optional()
        .map_err(unavailable)?
        .ok_or_else(|| StoreError::NotFound(format!("run {id}")))??;
    let (mut runs, _) = attach_steps(conn, vec![run], usize::MAX, 0, false)?;
    runs.pop()
        .ok_or_else(|| StoreError::NotFound(format!("run {id}")))
}

/// Reads runs from a query over [`RUN_COLUMNS`], then their steps and approvals in two
/// more queries (no query per run), stopping once their contexts and step outputs pass
/// `budget` bytes: the runs read whole (at least one), and whether it stopped early.
pub fn load_runs(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
    budget: usize,
) -> Result<(Vec<Run>, bool), StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
    let (mut runs, mut used, mut cut) = (Vec::new(), 0, false);
    {
        let mut rows = stmt.query(args).map_err(unavailable)?;
        while let Some(row) = rows.next().map_err(unavailable)? {
            used += text_len(row, 5);
            if used > budget && !runs.is_empty() {
                cut = true;
                break;
            }
            runs.push(run_row(row).map_err(unavailable)??);
        }
    }
    attach_steps(conn, runs, budget, used, cut)
}

/// The length of text column `i` (0 when NULL or not text).
fn text_len(row: &Row<'_>, i: usize) -> usize {
    row.get_ref(i)
        .ok()
        .and_then(|v| v.as_str_or_null().ok().flatten())
        .map_or(0, str::len)
}

/// The steps and approvals of `runs` (newest first, as lists have them), stopping at the
/// first run whose steps would pass `budget` (`used` is what the runs took).
fn attach_steps(
    conn: &Connection,
    mut runs: Vec<Run>,
    budget: usize,
    mut used: usize,
    mut cut: bool,
) -> Result<(Vec<Run>, bool), StoreError> {
    if runs.is_empty() {
        return Ok((runs, cut));
    }
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let placeholders = vec!["?"; ids.len()].join(",");
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id IN ({placeholders}) \
             ORDER BY run_id DESC, idx DESC"
        ))
        .map_err(unavailable)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(ids.iter()))
        .map_err(unavailable)?;
    let mut at = 0;
    while let Some(row) = rows.next().map_err(unavailable)? {
        let (run_id, step) = step_row(row).map_err(unavailable)?;
        while at < runs.len() && runs[at].id != run_id {
            at += 1;
        }
        if at == runs.len() {
            break;
        }
        used += text_len(row, 7) + text_len(row, 9);
        if used > budget && at > 0 {
            runs.truncate(at);
            cut = true;
            break;
        }
        runs[at].steps.push(step?);
    }
    drop(rows);
    // Read last step first: the primary key's order backwards, with no sort.
    runs.iter_mut().for_each(|r| r.steps.reverse());
    attach_approvals(conn, &mut runs)?;
    Ok((runs, cut))
}

fn attach_approvals(conn: &Connection, runs: &mut [Run]) -> Result<(), StoreError> {
    if runs.is_empty() {
        return Ok(());
    }
    let position: std::collections::HashMap<String, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let placeholders = vec!["?"; ids.len()].join(",");
    let params = rusqlite::params_from_iter(ids.iter());
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT run_id, step, decision, by_name, at, comment, input FROM approvals \
             WHERE run_id IN ({placeholders}) ORDER BY run_id, n"
        ))
        .map_err(unavailable)?;
    let approvals = stmt.query_map(params, approval_row).map_err(unavailable)?;
    for approval in approvals {
        let (run_id, approval) = approval.map_err(unavailable)?;
        if let Some(&i) = position.get(&run_id) {
            runs[i].approvals.push(approval?);
        }
    }
    Ok(())
}

/// How [`put_step`] writes a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepWrite {
    /// The row is new (the run is being created).
    Insert,
    /// The row is rewritten, or inserted when there is none (a re-run onto a version with
    /// more steps).
    Update,
}

/// Writes one step row.
pub fn put_step(
    conn: &Connection,
    run_id: &str,
    idx: usize,
    step: &StepRun,
    how: StepWrite,
) -> Result<(), StoreError> {
    let output = step.output.as_ref().map(to_json);
    let attempts = to_json(&step.attempts);
    let extra = StepExtra::of(step).as_ref().map(to_json);
    let values = params![
        run_id,
        idx as i64,
        step.step_id,
        step.name,
        step.action,
        step.status.as_str(),
        step.error,
        output,
        step.http_code,
        attempts,
        step.started_at.map(ms),
        step.finished_at.map(ms),
        step.waiting_since.map(ms),
        step.output_truncated as i64,
        extra,
        i64::from(step.interruptions),
    ];
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute(values))
            .map_err(unavailable)
    };
    if how == StepWrite::Update && run(STEP_UPDATE)? == 1 {
        return Ok(());
    }
    run(STEP_INSERT).map(drop)
}

/// Inserts log entries numbered from `first_seq`.
pub fn put_logs(
    conn: &Connection,
    run_id: &str,
    first_seq: u64,
    entries: Vec<crate::model::NewLogEntry>,
) -> Result<Vec<LogEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO run_logs (run_id, seq, ts, level, source, step, message, status) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(unavailable)?;
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let seq = first_seq + i as u64;
        stmt.execute(params![
            run_id,
            seq as i64,
            ms(entry.ts),
            entry.level.as_str(),
            entry.source.as_str(),
            entry.step,
            entry.message,
            entry.status.as_ref().map(to_json),
        ])
        .map_err(unavailable)?;
        out.push(entry.into_entry(seq));
    }
    Ok(out)
}

/// Decodes a `run_logs` row (`seq, ts, level, source, step, message, status`).
pub fn log_row(row: &Row<'_>) -> rusqlite::Result<Result<LogEntry, StoreError>> {
    let level: String = row.get(2)?;
    let source: String = row.get(3)?;
    let status: Option<String> = row.get(6)?;
    let decode = || -> Result<LogEntry, StoreError> {
        Ok(LogEntry {
            seq: row.get::<_, i64>(0).map_err(unavailable)? as u64,
            ts: from_ms(row.get(1).map_err(unavailable)?),
            level: parse(&level)?,
            source: parse(&source)?,
            step: row.get(4).map_err(unavailable)?,
            message: row.get(5).map_err(unavailable)?,
            status: status.as_deref().map(json).transpose()?,
        })
    };
    Ok(decode())
}
