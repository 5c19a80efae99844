//! Workflow, template, list, log and outbox statements of the PostgreSQL store; each
//! mirrors the embedded store's statement of the same purpose.

use deadpool_postgres::GenericClient;

use crate::model::{LogEntry, Page, PageRequest, TemplateRecord, Timestamp, WorkflowVersion, now};
use crate::store::{NewWorkflowVersion, StoreError, StoredEvent};

use crate::store::encoding::{page, split_cursor};

use super::db_error;
use super::rows::{VERSION_COLUMNS, from_ms, get, json, log_row, ms, to_json, version_row};
use super::writer::Fault;

async fn insert_version<C: GenericClient>(
    c: &C,
    new: &NewWorkflowVersion,
    version: u32,
    at: Timestamp,
) -> Result<WorkflowVersion, Fault> {
    c.execute(
        &format!(
            "INSERT INTO workflow_versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ),
        &[
            &new.id,
            &i64::from(version),
            &new.name,
            &to_json(&new.definition),
            &ms(at),
            &new.created_by,
            &new.restored_from.map(i64::from),
        ],
    )
    .await?;
    Ok(WorkflowVersion {
        id: new.id.clone(),
        name: new.name.clone(),
        version,
        definition: new.definition.clone(),
        created_at: at,
        created_by: new.created_by.clone(),
        restored_from: new.restored_from,
    })
}

/// Inserts a workflow at version 1; `Conflict` when the id exists.
pub async fn create_workflow<C: GenericClient>(
    c: &C,
    new: &NewWorkflowVersion,
) -> Result<WorkflowVersion, Fault> {
    let at = now();
    let inserted = c
        .execute(
            "INSERT INTO workflows (id, name, latest_version, created_at, updated_at) \
             VALUES ($1, $2, 1, $3, $3) ON CONFLICT (id) DO NOTHING",
            &[&new.id, &new.name, &ms(at)],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("workflow {} already exists", new.id)).into());
    }
    insert_version(c, new, 1, at).await
}

/// Appends the next version; the row lock on `workflows` numbers concurrent appends apart.
pub async fn add_workflow_version<C: GenericClient>(
    c: &C,
    new: &NewWorkflowVersion,
) -> Result<WorkflowVersion, Fault> {
    let at = now();
    let row = c
        .query_opt(
            "UPDATE workflows SET latest_version = latest_version + 1, name = $2, updated_at = $3 \
             WHERE id = $1 RETURNING latest_version",
            &[&new.id, &new.name, &ms(at)],
        )
        .await?;
    let row = row.ok_or_else(|| StoreError::NotFound(format!("workflow {}", new.id)))?;
    let version: i64 = get(&row, 0)?;
    insert_version(c, new, version as u32, at).await
}

pub async fn get_workflow<C: GenericClient>(
    c: &C,
    id: &str,
    version: Option<u32>,
) -> Result<WorkflowVersion, StoreError> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM workflow_versions WHERE workflow_id = $1 AND version = \
         COALESCE($2, (SELECT latest_version FROM workflows WHERE id = $1))"
    );
    let found = c
        .query_opt(&sql, &[&id, &version.map(i64::from)])
        .await
        .map_err(db_error)?;
    match (found, version) {
        (Some(row), _) => version_row(&row),
        (None, Some(n)) => Err(StoreError::NotFound(format!(
            "version {n} of workflow {id}"
        ))),
        (None, None) => Err(StoreError::NotFound(format!("workflow {id}"))),
    }
}

pub async fn list_workflows<C: GenericClient>(
    c: &C,
    request: &PageRequest,
) -> Result<Page<WorkflowVersion>, StoreError> {
    let (t, id) = split_cursor(&request.cursor)?.unwrap_or((i64::MAX, String::new()));
    let cols = VERSION_COLUMNS
        .split(", ")
        .map(|c| format!("v.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols}, w.created_at FROM workflows w JOIN workflow_versions v \
         ON v.workflow_id = w.id AND v.version = w.latest_version \
         WHERE (w.created_at, w.id) < ($1, $2) \
         ORDER BY w.created_at DESC, w.id DESC LIMIT $3"
    );
    let rows = c
        .query(&sql, &[&t, &id, &(request.limit as i64 + 1)])
        .await
        .map_err(db_error)?;
    let items = rows
        .iter()
        .map(|r| Ok((version_row(r)?, get::<i64>(r, 7)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let page = page(items, request.limit, |(v, created)| {
        format!("{created}:{}", v.id)
    });
    Ok(Page {
        items: page.items.into_iter().map(|(v, _)| v).collect(),
        next_cursor: page.next_cursor,
    })
}

pub async fn list_workflow_versions<C: GenericClient>(
    c: &C,
    id: &str,
) -> Result<Vec<WorkflowVersion>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM workflow_versions WHERE workflow_id = $1 ORDER BY version DESC"
            ),
            &[&id],
        )
        .await
        .map_err(db_error)?;
    if rows.is_empty() {
        return Err(StoreError::NotFound(format!("workflow {id}")));
    }
    rows.iter().map(version_row).collect()
}

fn template_row(row: &tokio_postgres::Row) -> Result<TemplateRecord, StoreError> {
    Ok(TemplateRecord {
        name: get(row, 0)?,
        body: json(get::<&str>(row, 1)?)?,
        created_at: from_ms(get(row, 2)?),
        created_by: get(row, 3)?,
    })
}

pub async fn get_template<C: GenericClient>(
    c: &C,
    name: &str,
) -> Result<TemplateRecord, StoreError> {
    let row = c
        .query_opt(
            "SELECT name, body, created_at, created_by FROM templates WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(db_error)?;
    template_row(&row.ok_or_else(|| StoreError::NotFound(format!("template {name}")))?)
}

pub async fn list_templates<C: GenericClient>(c: &C) -> Result<Vec<TemplateRecord>, StoreError> {
    let rows = c
        .query(
            "SELECT name, body, created_at, created_by FROM templates ORDER BY name",
            &[],
        )
        .await
        .map_err(db_error)?;
    rows.iter().map(template_row).collect()
}

pub async fn read_logs<C: GenericClient>(
    c: &C,
    run_id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<LogEntry>, StoreError> {
    let rows = c
        .query(
            "SELECT seq, ts, level, source, step, message, status FROM run_logs \
             WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&run_id, &(after as i64), &(limit as i64)],
        )
        .await
        .map_err(db_error)?;
    if rows.is_empty() {
        let exists = c
            .query_opt("SELECT 1 FROM runs WHERE id = $1", &[&run_id])
            .await
            .map_err(db_error)?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("run {run_id}")));
        }
    }
    rows.iter().map(log_row).collect()
}

pub async fn read_events<C: GenericClient>(
    c: &C,
    after_id: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = c
        .query(
            "SELECT id, run_id, workflow_id, seq, body FROM events \
             WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3",
            &[
                &(after_id.min(i64::MAX as u64) as i64),
                &(upto as i64),
                &(limit as i64),
            ],
        )
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|r| {
            Ok(StoredEvent {
                id: get::<i64>(r, 0)? as u64,
                run_id: get(r, 1)?,
                workflow_id: get(r, 2)?,
                seq: get::<i64>(r, 3)? as u64,
                event: json(get::<&str>(r, 4)?)?,
            })
        })
        .collect()
}
