//! Workflow versions and stored templates in the embedded store: append-only versions
//! numbered atomically by the writer, templates by name.

use rusqlite::{Connection, OptionalExtension, params};

use super::collect;
use super::pool::unavailable;
use super::rows::{VERSION_COLUMNS, from_ms, json, ms, to_json, version_row};
use crate::model::{Page, PageRequest, TemplateRecord, Timestamp, WorkflowVersion, now};
use crate::store::encoding::{page, split_cursor};
use crate::store::{NewWorkflowVersion, StoreError};

pub fn create_workflow(
    conn: &Connection,
    new: NewWorkflowVersion,
) -> Result<WorkflowVersion, StoreError> {
    let at = now();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO workflows (id, name, latest_version, created_at, updated_at) \
             VALUES (?1, ?2, 1, ?3, ?3) ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![new.id, new.name, ms(at)]))
        .map_err(unavailable)?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "workflow {} already exists",
            new.id
        )));
    }
    insert_version(conn, &new, 1, at)
}

pub fn add_workflow_version(
    conn: &Connection,
    new: NewWorkflowVersion,
) -> Result<WorkflowVersion, StoreError> {
    let at = now();
    let version: Option<u32> = conn
        .prepare_cached(
            "UPDATE workflows SET latest_version = latest_version + 1, name = ?2, updated_at = ?3 \
             WHERE id = ?1 RETURNING latest_version",
        )
        .and_then(|mut s| {
            s.query_row(params![new.id, new.name, ms(at)], |r| r.get(0))
                .optional()
        })
        .map_err(unavailable)?;
    let version = version.ok_or_else(|| StoreError::NotFound(format!("workflow {}", new.id)))?;
    insert_version(conn, &new, version, at)
}

pub fn get_workflow(
    conn: &Connection,
    id: &str,
    version: Option<u32>,
) -> Result<WorkflowVersion, StoreError> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM workflow_versions WHERE workflow_id = ?1 AND version = \
         COALESCE(?2, (SELECT latest_version FROM workflows WHERE id = ?1))"
    );
    let found = conn
        .prepare_cached(&sql)
        .and_then(|mut s| s.query_row(params![id, version], version_row).optional())
        .map_err(unavailable)?;
    match (found, version) {
        (Some(v), _) => v,
        (None, Some(n)) => Err(StoreError::NotFound(format!(
            "version {n} of workflow {id}"
        ))),
        (None, None) => Err(StoreError::NotFound(format!("workflow {id}"))),
    }
}

pub fn list_workflows(
    conn: &Connection,
    request: &PageRequest,
) -> Result<Page<WorkflowVersion>, StoreError> {
    let cursor = split_cursor(&request.cursor)?;
    let limit = request.limit;
    let (t, id) = cursor.unwrap_or((i64::MAX, String::new()));
    let sql = format!(
        "SELECT {cols}, w.created_at FROM workflows w JOIN workflow_versions v \
         ON v.workflow_id = w.id AND v.version = w.latest_version \
         WHERE (w.created_at, w.id) < (?1, ?2) \
         ORDER BY w.created_at DESC, w.id DESC LIMIT ?3",
        cols = VERSION_COLUMNS
            .split(", ")
            .map(|c| format!("v.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
    let rows = stmt
        .query_map(params![t, id, limit as i64 + 1], |r| {
            Ok(version_row(r)?.map(|v| (v, r.get::<_, i64>(7).unwrap_or_default())))
        })
        .map_err(unavailable)?;
    let items = collect(rows)?;
    let page = page(items, limit, |(v, created)| format!("{created}:{}", v.id));
    Ok(Page {
        items: page.items.into_iter().map(|(v, _)| v).collect(),
        next_cursor: page.next_cursor,
    })
}

pub fn list_workflow_versions(
    conn: &Connection,
    id: &str,
) -> Result<Vec<WorkflowVersion>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM workflow_versions WHERE workflow_id = ?1 ORDER BY version DESC"
        ))
        .map_err(unavailable)?;
    let versions = collect(stmt.query_map([&id], version_row).map_err(unavailable)?)?;
    if versions.is_empty() {
        return Err(StoreError::NotFound(format!("workflow {id}")));
    }
    Ok(versions)
}

pub fn create_template(
    conn: &Connection,
    template: TemplateRecord,
) -> Result<TemplateRecord, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO templates (name, body, created_at, created_by) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                template.name,
                to_json(&template.body),
                ms(template.created_at),
                template.created_by
            ])
        })
        .map_err(unavailable)?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "template {} already exists",
            template.name
        )));
    }
    Ok(template)
}

pub fn get_template(conn: &Connection, name: &str) -> Result<TemplateRecord, StoreError> {
    let row: Option<(String, i64, Option<String>)> = conn
        .prepare_cached("SELECT body, created_at, created_by FROM templates WHERE name = ?1")
        .and_then(|mut s| {
            s.query_row([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(unavailable)?;
    let (body, created_at, created_by) =
        row.ok_or_else(|| StoreError::NotFound(format!("template {name}")))?;
    Ok(TemplateRecord {
        name: name.to_owned(),
        body: json(&body)?,
        created_at: from_ms(created_at),
        created_by,
    })
}

pub fn list_templates(conn: &Connection) -> Result<Vec<TemplateRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT name, body, created_at, created_by FROM templates ORDER BY name")
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([], |r| {
            let body: String = r.get(1)?;
            Ok(json(&body).map(|body| TemplateRecord {
                name: r.get(0).unwrap_or_default(),
                body,
                created_at: from_ms(r.get(2).unwrap_or_default()),
                created_by: r.get(3).unwrap_or_default(),
            }))
        })
        .map_err(unavailable)?;
    collect(rows)
}

fn insert_version(
    conn: &Connection,
    new: &NewWorkflowVersion,
    version: u32,
    at: Timestamp,
) -> Result<WorkflowVersion, StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO workflow_versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            new.id,
            version,
            new.name,
            to_json(&new.definition),
            ms(at),
            new.created_by,
            new.restored_from
        ])
    })
    .map_err(unavailable)?;
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
