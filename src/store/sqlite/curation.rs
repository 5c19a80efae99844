//! Run search, workflow search, archiving and deletion in the embedded store.
//!
//! Run filters become plain conditions on `runs`, walked newest first by id: the workflow
//! and status filters use their indexes, a context filter on a top-level member looks its
//! value up in `run_context_index` (kept by triggers, see migration 0003), and one on a
//! nested member or a long value reads each candidate's context with `->`. The summary
//! view reads neither contexts nor step outputs and attempts.

use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};

use super::collect;
use super::pool::unavailable;
use super::rows::{
    RUN_COLUMNS, VERSION_COLUMNS, from_ms, load_runs, ms, run_row, step_row, version_row,
};
use serde_json::Value;

use crate::model::{ContextMatch, Page, PageRequest, Run, RunFilter, RunStatus, now};
use crate::store::curation::{TERMINAL_SQL, json_path, still_active};
use crate::store::encoding::{LIST_PAGE_BYTES, bounded_page, page, parse, split_cursor};
use crate::store::{Archived, Deletion, StoreError, WorkflowEntry, WorkflowFilter, WorkflowHead};

/// The longest value (as JSON text, in characters) `run_context_index` holds; migration
/// 0003 indexes nothing longer.
const INDEXED_VALUE_CHARS: usize = 128;

/// The key of a context filter `run_context_index` answers: a top-level member, every
/// value short enough to be indexed.
fn indexed_key(matched: &ContextMatch) -> Option<&str> {
    let [key] = matched.path.as_slice() else {
        return None;
    };
    let short = |v: &Value| v.to_string().chars().count() <= INDEXED_VALUE_CHARS;
    matched.values.iter().all(short).then_some(key.as_str())
}

/// The conditions of `filter` after `WHERE`, and their arguments.
fn run_conditions(filter: &RunFilter) -> Result<(String, Vec<Box<dyn ToSql>>), StoreError> {
    let mut sql = String::from("1");
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    let mut add = |sql: &mut String, condition: &str, values: Vec<Box<dyn ToSql>>| {
        sql.push_str(" AND ");
        sql.push_str(condition);
        args.extend(values);
    };
    if let Some(workflow_id) = &filter.workflow_id {
        add(
            &mut sql,
            "workflow_id = ?",
            vec![Box::new(workflow_id.clone())],
        );
    }
    if !filter.statuses.is_empty() {
        let marks = vec!["?"; filter.statuses.len()].join(", ");
        let values = filter
            .statuses
            .iter()
            .map(|s| Box::new(s.as_str()) as Box<dyn ToSql>)
            .collect();
        add(&mut sql, &format!("status IN ({marks})"), values);
    }
    if let Some(version) = filter.workflow_version {
        add(
            &mut sql,
            "workflow_version = ?",
            vec![Box::new(i64::from(version))],
        );
    }
    if let Some(t) = filter.created_after {
        add(&mut sql, "created_at >= ?", vec![Box::new(ms(t))]);
    }
    if let Some(t) = filter.created_before {
        add(&mut sql, "created_at < ?", vec![Box::new(ms(t))]);
    }
    match filter.trigger.as_deref() {
        None => {}
        Some("api") => add(&mut sql, "trigger_info IS NULL", Vec::new()),
        Some(kind) => add(
            &mut sql,
            "json_extract(trigger_info, '$.type') = ?",
            vec![Box::new(kind.to_owned())],
        ),
    }
    for matched in &filter.context {
        let marks = vec!["?"; matched.values.len()].join(", ");
        let texts = matched.values.iter().map(Value::to_string);
        let values: Vec<Box<dyn ToSql>> = texts.map(|t| Box::new(t) as Box<dyn ToSql>).collect();
        match indexed_key(matched) {
            Some(key) => {
                let mut all: Vec<Box<dyn ToSql>> = vec![Box::new(key.to_owned())];
                all.extend(values);
                add(
                    &mut sql,
                    &format!(
                        "id IN (SELECT run_id FROM run_context_index \
                         WHERE key = ? AND value IN ({marks}))"
                    ),
                    all,
                );
            }
            None => {
                let mut all: Vec<Box<dyn ToSql>> = vec![Box::new(json_path(&matched.path)?)];
                all.extend(values);
                add(&mut sql, &format!("(context -> ?) IN ({marks})"), all);
            }
        }
    }
    Ok((sql, args))
}

/// The run columns of a view: the summary leaves the context and the history out.
fn columns(summary: bool) -> String {
    if summary {
        RUN_COLUMNS
            .replacen("context,", "'{}',", 1)
            .replacen("retries,", "'[]',", 1)
            .replacen(" extra,", " NULL,", 1)
    } else {
        RUN_COLUMNS.to_owned()
    }
}

/// Runs matching `filter`, newest first.
pub fn list_runs(
    conn: &Connection,
    filter: &RunFilter,
    request: &PageRequest,
) -> Result<Page<Run>, StoreError> {
    let (conditions, mut args) = run_conditions(filter)?;
    let cursor = request
        .cursor
        .clone()
        .unwrap_or_else(|| "\u{10FFFF}".into());
    args.push(Box::new(cursor));
    args.push(Box::new(request.limit as i64 + 1));
    let sql = format!(
        "SELECT {} FROM runs WHERE {conditions} AND id < ? ORDER BY id DESC LIMIT ?",
        columns(filter.summary)
    );
    let refs: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    if filter.summary {
        let runs = load_summaries(conn, &sql, &refs)?;
        return Ok(page(runs, request.limit, |r| r.id.clone()));
    }
    let (runs, cut) = load_runs(conn, &sql, &refs, LIST_PAGE_BYTES)?;
    Ok(bounded_page(runs, cut, request.limit))
}

/// Runs with their steps' statuses and errors only (no outputs, attempts or approvals).
fn load_summaries(
    conn: &Connection,
    sql: &str,
    args: &[&dyn ToSql],
) -> Result<Vec<Run>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
    let mut runs = collect(stmt.query_map(args, run_row).map_err(unavailable)?)?;
    if runs.is_empty() {
        return Ok(runs);
    }
    let position: std::collections::HashMap<String, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    let marks = vec!["?"; runs.len()].join(",");
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT run_id, idx, step_id, name, action, status, error, NULL, http_code, '[]', \
             started_at, finished_at, waiting_since, truncated, NULL, interruptions FROM step_runs \
             WHERE run_id IN ({marks}) ORDER BY run_id, idx"
        ))
        .map_err(unavailable)?;
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let steps = stmt
        .query_map(params_from_iter(ids.iter()), step_row)
        .map_err(unavailable)?;
    for step in steps {
        let (run_id, step) = step.map_err(unavailable)?;
        if let Some(&i) = position.get(&run_id) {
            runs[i].steps.push(step?);
        }
    }
    Ok(runs)
}

/// Runs matching `filter` by status.
pub fn count_runs_by_status(
    conn: &Connection,
    filter: &RunFilter,
) -> Result<Vec<(RunStatus, u64)>, StoreError> {
    let (conditions, args) = run_conditions(filter)?;
    let sql = format!("SELECT status, COUNT(*) FROM runs WHERE {conditions} GROUP BY status");
    let refs: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
    let rows = stmt
        .query_map(refs.as_slice(), |r| {
            let status: String = r.get(0)?;
            let n: i64 = r.get(1)?;
            Ok(parse::<RunStatus>(&status).map(|s| (s, n.max(0) as u64)))
        })
        .map_err(unavailable)?;
    collect(rows)
}

fn archived(at: Option<i64>, by: Option<String>) -> Option<Archived> {
    Some(Archived {
        at: from_ms(at?),
        by: by.unwrap_or_default(),
    })
}

fn prefixed(columns: &str, table: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Latest versions of the workflows matching `filter`, newest workflow first.
pub fn search_workflows(
    conn: &Connection,
    filter: &WorkflowFilter,
    request: &PageRequest,
) -> Result<Page<WorkflowEntry>, StoreError> {
    let (t, id) = split_cursor(&request.cursor)?.unwrap_or((i64::MAX, String::new()));
    let sql = format!(
        "SELECT {cols}, w.created_at, w.archived_at, w.archived_by FROM workflows w \
         JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.latest_version \
         WHERE (w.created_at, w.id) < (?1, ?2) AND (?3 OR w.archived_at IS NULL) \
         AND (?4 IS NULL OR substr(w.name, 1, length(?4)) = ?4) \
         ORDER BY w.created_at DESC, w.id DESC LIMIT ?5",
        cols = prefixed(VERSION_COLUMNS, "v")
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
    let rows = stmt
        .query_map(
            params![
                t,
                id,
                filter.archived,
                filter.name_prefix,
                request.limit as i64 + 1
            ],
            |r| {
                let created: i64 = r.get(7)?;
                let entry = archived(r.get(8)?, r.get(9)?);
                Ok(version_row(r)?.map(|version| {
                    let archived = entry.clone();
                    (WorkflowEntry { version, archived }, created)
                }))
            },
        )
        .map_err(unavailable)?;
    let items = collect(rows)?;
    let page = page(items, request.limit, |(e, created)| {
        format!("{created}:{}", e.version.id)
    });
    Ok(Page {
        items: page.items.into_iter().map(|(e, _)| e).collect(),
        next_cursor: page.next_cursor,
    })
}

/// A version of a workflow with its archive state.
pub fn workflow_entry(
    conn: &Connection,
    id: &str,
    version: Option<u32>,
) -> Result<WorkflowEntry, StoreError> {
    let sql = format!(
        "SELECT {cols}, w.archived_at, w.archived_by FROM workflow_versions v \
         JOIN workflows w ON w.id = v.workflow_id \
         WHERE v.workflow_id = ?1 AND v.version = COALESCE(?2, w.latest_version)",
        cols = prefixed(VERSION_COLUMNS, "v")
    );
    let found = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_row(params![id, version], |r| {
                let entry = archived(r.get(7)?, r.get(8)?);
                Ok(version_row(r)?.map(|version| WorkflowEntry {
                    version,
                    archived: entry,
                }))
            })
            .optional()
        })
        .map_err(unavailable)?;
    found.unwrap_or_else(|| Err(not_found(id, version)))
}

/// The version number of a workflow entry and its archive state, without the definition.
pub fn workflow_head(
    conn: &Connection,
    id: &str,
    version: Option<u32>,
) -> Result<WorkflowHead, StoreError> {
    let found = conn
        .prepare_cached(
            "SELECT v.version, w.archived_at, w.archived_by FROM workflow_versions v \
             JOIN workflows w ON w.id = v.workflow_id \
             WHERE v.workflow_id = ?1 AND v.version = COALESCE(?2, w.latest_version)",
        )
        .and_then(|mut s| {
            s.query_row(params![id, version], |r| {
                Ok(WorkflowHead {
                    version: r.get(0)?,
                    archived: archived(r.get(1)?, r.get(2)?),
                })
            })
            .optional()
        })
        .map_err(unavailable)?;
    found.ok_or_else(|| not_found(id, version))
}

fn not_found(id: &str, version: Option<u32>) -> StoreError {
    match version {
        Some(n) => StoreError::NotFound(format!("version {n} of workflow {id}")),
        None => StoreError::NotFound(format!("workflow {id}")),
    }
}

/// Archives a workflow once; returns who archived it.
pub fn archive_workflow(conn: &Connection, id: &str, by: &str) -> Result<Archived, StoreError> {
    conn.prepare_cached(
        "UPDATE workflows SET archived_at = ?2, archived_by = ?3 \
         WHERE id = ?1 AND archived_at IS NULL",
    )
    .and_then(|mut s| s.execute(params![id, ms(now()), by]))
    .map_err(unavailable)?;
    let found: Option<(Option<i64>, Option<String>)> = conn
        .prepare_cached("SELECT archived_at, archived_by FROM workflows WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(unavailable)?;
    found
        .and_then(|(at, by)| archived(at, by))
        .ok_or_else(|| StoreError::NotFound(format!("workflow {id}")))
}

/// Deletes a finished run and everything it owns; records the deletion.
pub fn delete_run(conn: &Connection, id: &str, by: &str) -> Result<Deletion, StoreError> {
    let deleted: Option<(String, String)> = conn
        .prepare_cached(&format!(
            "DELETE FROM runs WHERE id = ?1 AND status IN {TERMINAL_SQL} \
             RETURNING workflow_id, status"
        ))
        .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(unavailable)?;
    let Some((workflow_id, status)) = deleted else {
        let status: Option<String> = conn
            .prepare_cached("SELECT status FROM runs WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(unavailable)?;
        return Err(match status {
            Some(status) => still_active(id, &status),
            None => StoreError::NotFound(format!("run {id}")),
        });
    };
    super::event_keys::forget_runs(conn, &[id.to_owned()])?;
    for table in super::lifecycle::RUN_CHILDREN {
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE run_id = ?1"))
            .and_then(|mut s| s.execute([id]))
            .map_err(unavailable)?;
    }
    let deletion = Deletion {
        workflow_id,
        status: parse(&status)?,
        at: now(),
        by: by.to_owned(),
    };
    conn.prepare_cached(
        "INSERT INTO deleted_runs (id, workflow_id, status, deleted_at, deleted_by) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            deletion.workflow_id,
            status,
            ms(deletion.at),
            deletion.by
        ])
    })
    .map_err(unavailable)?;
    Ok(deletion)
}

/// The record of a deleted run.
pub fn deleted_run(conn: &Connection, id: &str) -> Result<Option<Deletion>, StoreError> {
    let found: Option<(String, String, i64, String)> = conn
        .prepare_cached(
            "SELECT workflow_id, status, deleted_at, deleted_by FROM deleted_runs WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()
        })
        .map_err(unavailable)?;
    found
        .map(|(workflow_id, status, at, by)| {
            Ok(Deletion {
                workflow_id,
                status: parse(&status)?,
                at: from_ms(at),
                by,
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_view_reads_no_context_and_no_history() {
        let summary = columns(true);
        assert!(!summary.contains("context"), "{summary}");
        assert!(!summary.contains("retries"), "{summary}");
        assert_eq!(summary.split(", ").count(), RUN_COLUMNS.split(", ").count());
    }
}
