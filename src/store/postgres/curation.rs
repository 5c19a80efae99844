//! Run search, workflow search, archiving and deletion in the PostgreSQL store; each
//! mirrors the embedded store's statement of the same purpose.
//!
//! A context filter is a containment test on `context::jsonb`, which the GIN index of
//! migration 0003 answers for any key; the other filters are plain conditions.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::db_error;
use super::rows::{
    RUN_COLUMNS, VERSION_COLUMNS, from_ms, get, load_runs_bounded, ms, parse, run_row, step_row,
    to_json, version_row,
};
use super::writer::Fault;
use crate::model::{Page, PageRequest, Run, RunFilter, RunStatus, now};
use crate::store::curation::{TERMINAL_SQL, still_active};
use crate::store::encoding::{LIST_PAGE_BYTES, bounded_page, page, split_cursor};
use crate::store::{Archived, Deletion, StoreError, WorkflowEntry, WorkflowFilter, WorkflowHead};

type Args = Vec<Box<dyn ToSql + Sync + Send>>;

/// Adds `value` as the next parameter and returns its placeholder.
fn param(args: &mut Args, value: impl ToSql + Sync + Send + 'static) -> String {
    args.push(Box::new(value));
    format!("${}", args.len())
}

/// The conditions of `filter` after `WHERE`, with their parameters in `args`.
fn run_conditions(filter: &RunFilter, args: &mut Args) -> String {
    let mut conditions = vec!["TRUE".to_owned()];
    if let Some(workflow_id) = &filter.workflow_id {
        conditions.push(format!(
            "workflow_id = {}",
            param(args, workflow_id.clone())
        ));
    }
    if !filter.statuses.is_empty() {
        let statuses: Vec<String> = filter.statuses.iter().map(|s| s.as_str().into()).collect();
        conditions.push(format!("status = ANY({}::text[])", param(args, statuses)));
    }
    if let Some(version) = filter.workflow_version {
        let p = param(args, i64::from(version));
        conditions.push(format!("workflow_version = {p}"));
    }
    if let Some(t) = filter.created_after {
        conditions.push(format!("created_at >= {}", param(args, ms(t))));
    }
    if let Some(t) = filter.created_before {
        conditions.push(format!("created_at < {}", param(args, ms(t))));
    }
    match filter.trigger.as_deref() {
        None => {}
        Some("api") => conditions.push("trigger_info IS NULL".into()),
        Some(kind) => {
            let p = param(args, kind.to_owned());
            conditions.push(format!("(trigger_info::jsonb ->> 'type') = {p}"));
        }
    }
    for matched in &filter.context {
        let tests: Vec<String> = matched
            .as_documents()
            .iter()
            .map(|doc| {
                format!(
                    "context::jsonb @> {}::text::jsonb",
                    param(args, to_json(doc))
                )
            })
            .collect();
        conditions.push(format!("({})", tests.join(" OR ")));
    }
    conditions.join(" AND ")
}

fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Runs matching `filter`, newest first.
pub async fn list_runs<C: GenericClient>(
    c: &C,
    filter: &RunFilter,
    request: &PageRequest,
) -> Result<Page<Run>, StoreError> {
    let mut args = Args::new();
    let conditions = run_conditions(filter, &mut args);
    let cursor = request
        .cursor
        .clone()
        .unwrap_or_else(|| "\u{10FFFF}".into());
    let cursor = param(&mut args, cursor);
    let limit = param(&mut args, request.limit as i64 + 1);
    let columns = if filter.summary {
        RUN_COLUMNS
            .replacen("context,", "'{}',", 1)
            .replacen("retries,", "'[]',", 1)
            .replacen(" extra,", " NULL,", 1)
    } else {
        RUN_COLUMNS.to_owned()
    };
    let sql = format!(
        "SELECT {columns} FROM runs WHERE {conditions} AND id < {cursor} \
         ORDER BY id DESC LIMIT {limit}"
    );
    if !filter.summary {
        let (runs, cut) = load_runs_bounded(c, &sql, &refs(&args), LIST_PAGE_BYTES).await?;
        return Ok(bounded_page(runs, cut, request.limit));
    }
    let rows = c.query(&sql, &refs(&args)).await.map_err(db_error)?;
    let runs = load_summaries(c, rows).await?;
    Ok(page(runs, request.limit, |r| r.id.clone()))
}

/// Runs with their steps' statuses and errors only (no outputs, attempts or approvals).
async fn load_summaries<C: GenericClient>(
    c: &C,
    rows: Vec<tokio_postgres::Row>,
) -> Result<Vec<Run>, StoreError> {
    let mut runs = rows.iter().map(run_row).collect::<Result<Vec<_>, _>>()?;
    if runs.is_empty() {
        return Ok(runs);
    }
    let position: HashMap<String, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let steps = c
        .query(
            "SELECT run_id, idx, step_id, name, action, status, error, NULL::text, http_code, \
             '[]', started_at, finished_at, waiting_since, truncated, NULL::text, interruptions \
             FROM step_runs \
             WHERE run_id = ANY($1) ORDER BY run_id, idx",
            &[&ids],
        )
        .await
        .map_err(db_error)?;
    let mut found = Vec::with_capacity(steps.len());
    for row in &steps {
        found.push(step_row(row)?);
    }
    for (run_id, step) in found {
        if let Some(&i) = position.get(&run_id) {
            runs[i].steps.push(step);
        }
    }
    Ok(runs)
}

/// Runs matching `filter` by status.
pub async fn count_runs_by_status<C: GenericClient>(
    c: &C,
    filter: &RunFilter,
) -> Result<Vec<(RunStatus, u64)>, StoreError> {
    let mut args = Args::new();
    let conditions = run_conditions(filter, &mut args);
    let sql = format!("SELECT status, COUNT(*) FROM runs WHERE {conditions} GROUP BY status");
    let rows = c.query(&sql, &refs(&args)).await.map_err(db_error)?;
    rows.iter()
        .map(|r| {
            let status = parse::<RunStatus>(get::<&str>(r, 0)?)?;
            Ok((status, get::<i64>(r, 1)?.max(0) as u64))
        })
        .collect()
}

fn archived(row: &tokio_postgres::Row, at: usize) -> Result<Option<Archived>, StoreError> {
    Ok(get::<Option<i64>>(row, at)?.map(|t| Archived {
        at: from_ms(t),
        by: get::<Option<String>>(row, at + 1)
            .ok()
            .flatten()
            .unwrap_or_default(),
    }))
}

fn prefixed(columns: &str, table: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Latest versions of the workflows matching `filter`, newest workflow first.
pub async fn search_workflows<C: GenericClient>(
    c: &C,
    filter: &WorkflowFilter,
    request: &PageRequest,
) -> Result<Page<WorkflowEntry>, StoreError> {
    let (t, id) = split_cursor(&request.cursor)?.unwrap_or((i64::MAX, String::new()));
    let sql = format!(
        "SELECT {cols}, w.created_at, w.archived_at, w.archived_by FROM workflows w \
         JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.latest_version \
         WHERE (w.created_at, w.id) < ($1, $2) AND ($3 OR w.archived_at IS NULL) \
         AND ($4::text IS NULL OR starts_with(w.name, $4)) \
         ORDER BY w.created_at DESC, w.id DESC LIMIT $5",
        cols = prefixed(VERSION_COLUMNS, "v")
    );
    let rows = c
        .query(
            &sql,
            &[
                &t,
                &id,
                &filter.archived,
                &filter.name_prefix,
                &(request.limit as i64 + 1),
            ],
        )
        .await
        .map_err(db_error)?;
    let items = rows
        .iter()
        .map(|r| {
            let entry = WorkflowEntry {
                version: version_row(r)?,
                archived: archived(r, 8)?,
            };
            Ok((entry, get::<i64>(r, 7)?))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let page = page(items, request.limit, |(e, created)| {
        format!("{created}:{}", e.version.id)
    });
    Ok(Page {
        items: page.items.into_iter().map(|(e, _)| e).collect(),
        next_cursor: page.next_cursor,
    })
}

/// A version of a workflow with its archive state.
pub async fn workflow_entry<C: GenericClient>(
    c: &C,
    id: &str,
    version: Option<u32>,
) -> Result<WorkflowEntry, StoreError> {
    let sql = format!(
        "SELECT {cols}, w.archived_at, w.archived_by FROM workflow_versions v \
         JOIN workflows w ON w.id = v.workflow_id \
         WHERE v.workflow_id = $1 AND v.version = COALESCE($2, w.latest_version)",
        cols = prefixed(VERSION_COLUMNS, "v")
    );
    let found = c
        .query_opt(&sql, &[&id, &version.map(i64::from)])
        .await
        .map_err(db_error)?;
    match found {
        Some(row) => Ok(WorkflowEntry {
            version: version_row(&row)?,
            archived: archived(&row, 7)?,
        }),
        None => Err(not_found(id, version)),
    }
}

/// The version number of a workflow entry and its archive state, without the definition.
pub async fn workflow_head<C: GenericClient>(
    c: &C,
    id: &str,
    version: Option<u32>,
) -> Result<WorkflowHead, StoreError> {
    let found = c
        .query_opt(
            "SELECT v.version, w.archived_at, w.archived_by FROM workflow_versions v \
             JOIN workflows w ON w.id = v.workflow_id \
             WHERE v.workflow_id = $1 AND v.version = COALESCE($2, w.latest_version)",
            &[&id, &version.map(i64::from)],
        )
        .await
        .map_err(db_error)?;
    let Some(row) = found else {
        return Err(not_found(id, version));
    };
    Ok(WorkflowHead {
        version: get::<i64>(&row, 0)? as u32,
        archived: archived(&row, 1)?,
    })
}

fn not_found(id: &str, version: Option<u32>) -> StoreError {
    match version {
        Some(n) => StoreError::NotFound(format!("version {n} of workflow {id}")),
        None => StoreError::NotFound(format!("workflow {id}")),
    }
}

/// Archives a workflow once; returns who archived it.
pub async fn archive_workflow<C: GenericClient>(
    c: &C,
    id: &str,
    by: &str,
) -> Result<Archived, Fault> {
    c.execute(
        "UPDATE workflows SET archived_at = $2, archived_by = $3 \
         WHERE id = $1 AND archived_at IS NULL",
        &[&id, &ms(now()), &by],
    )
    .await?;
    let row = c
        .query_opt(
            "SELECT archived_at, archived_by FROM workflows WHERE id = $1",
            &[&id],
        )
        .await?;
    let row = row.ok_or_else(|| StoreError::NotFound(format!("workflow {id}")))?;
    Ok(archived(&row, 0)?.ok_or_else(|| StoreError::NotFound(format!("workflow {id}")))?)
}

/// Deletes a finished run and everything it owns; records the deletion.
pub async fn delete_run<C: GenericClient>(c: &C, id: &str, by: &str) -> Result<Deletion, Fault> {
    let deleted = c
        .query_opt(
            &format!(
                "DELETE FROM runs WHERE id = $1 AND status IN {TERMINAL_SQL} \
                 RETURNING workflow_id, status"
            ),
            &[&id],
        )
        .await?;
    let Some(row) = deleted else {
        let found = c
            .query_opt("SELECT status FROM runs WHERE id = $1", &[&id])
            .await?;
        return Err(match found {
            Some(row) => still_active(id, get::<&str>(&row, 0)?),
            None => StoreError::NotFound(format!("run {id}")),
        }
        .into());
    };
    let (workflow_id, status): (String, String) = (get(&row, 0)?, get(&row, 1)?);
    c.execute(
        "WITH s AS (DELETE FROM step_runs WHERE run_id = $1), \
              t AS (DELETE FROM tasks WHERE run_id = $1), \
              a AS (DELETE FROM approvals WHERE run_id = $1), \
              l AS (DELETE FROM run_logs WHERE run_id = $1), \
              e AS (DELETE FROM events WHERE run_id = $1) \
         DELETE FROM idempotency_keys WHERE run_id = $1",
        &[&id],
    )
    .await?;
    let deletion = Deletion {
        workflow_id,
        status: parse(&status)?,
        at: now(),
        by: by.to_owned(),
    };
    c.execute(
        "INSERT INTO deleted_runs (id, workflow_id, status, deleted_at, deleted_by) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        &[
            &id,
            &deletion.workflow_id,
            &status,
            &ms(deletion.at),
            &deletion.by,
        ],
    )
    .await?;
    Ok(deletion)
}

/// The record of a deleted run.
pub async fn deleted_run<C: GenericClient>(
    c: &C,
    id: &str,
) -> Result<Option<Deletion>, StoreError> {
    let row = c
        .query_opt(
            "SELECT workflow_id, status, deleted_at, deleted_by FROM deleted_runs WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(db_error)?;
    row.map(|r| {
        Ok(Deletion {
            workflow_id: get(&r, 0)?,
            status: parse(get::<&str>(&r, 1)?)?,
            at: from_ms(get(&r, 2)?),
            by: get(&r, 3)?,
        })
    })
    .transpose()
}
