//! Schedules, webhook triggers and filtered event reads of the embedded store. Writes run
//! inside one writer savepoint each; a schedule's tick is claimed in the savepoint of the
//! run it starts (see [`fire_schedule`]).

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::collect;
use super::pool::unavailable;
use super::rows::{from_ms, json, ms, parse, to_json};
use crate::model::Timestamp;
use crate::secret::Secret;
use crate::store::{
    Schedule, ScheduleFire, ScheduleUpdate, StoreError, StoredEvent, WebhookTrigger,
};

const SCHEDULE_COLUMNS: &str = "id, workflow_id, cron, timezone, context, overlap, paused, \
     next_fire_at, last_fire_time, last_run_id, created_at, updated_at, created_by";

fn schedule_row(row: &Row<'_>) -> rusqlite::Result<Result<Schedule, StoreError>> {
    let context: String = row.get(4)?;
    let overlap: String = row.get(5)?;
    let opt_ms = |i: usize| row.get::<_, Option<i64>>(i).map(|v| v.map(from_ms));
    let (next_fire_at, last_fire_time) = (opt_ms(7)?, opt_ms(8)?);
    let (id, workflow_id, cron, timezone): (String, String, String, String) =
        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
    let (paused, last_run_id, created_at, updated_at, created_by) = (
        row.get::<_, i64>(6)? != 0,
        row.get(9)?,
        from_ms(row.get(10)?),
        from_ms(row.get(11)?),
        row.get(12)?,
    );
    Ok((|| {
        Ok(Schedule {
            id,
            workflow_id,
            cron,
            timezone,
            context: json(&context)?,
            overlap: parse(&overlap)?,
            paused,
            next_fire_at,
            last_fire_time,
            last_run_id,
            created_at,
            updated_at,
            created_by,
        })
    })())
}

pub fn create_schedule(conn: &Connection, s: Schedule) -> Result<Schedule, StoreError> {
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO schedules ({SCHEDULE_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
             ON CONFLICT (id) DO NOTHING"
        ))
        .and_then(|mut st| {
            st.execute(params![
                s.id,
                s.workflow_id,
                s.cron,
                s.timezone,
                to_json(&s.context),
                s.overlap.as_str(),
                s.paused as i64,
                s.next_fire_at.map(ms),
                s.last_fire_time.map(ms),
                s.last_run_id,
                ms(s.created_at),
                ms(s.updated_at),
                s.created_by
            ])
        })
        .map_err(unavailable)?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "schedule {} already exists",
            s.id
        )));
    }
    Ok(s)
}

pub fn get_schedule(conn: &Connection, id: &str) -> Result<Schedule, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?1"
    ))
    .and_then(|mut st| st.query_row([id], schedule_row).optional())
    .map_err(unavailable)?
    .ok_or_else(|| StoreError::NotFound(format!("schedule {id}")))?
}

pub fn list_schedules(conn: &Connection) -> Result<Vec<Schedule>, StoreError> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY id"
        ))
        .map_err(unavailable)?;
    let rows = st.query_map([], schedule_row).map_err(unavailable)?;
    collect(rows)
}

pub fn update_schedule(conn: &Connection, u: ScheduleUpdate) -> Result<Schedule, StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE schedules SET workflow_id = ?2, cron = ?3, timezone = ?4, context = ?5, \
             overlap = ?6, paused = ?7, next_fire_at = ?8, updated_at = ?9 WHERE id = ?1",
        )
        .and_then(|mut st| {
            st.execute(params![
                u.id,
                u.workflow_id,
                u.cron,
                u.timezone,
                to_json(&u.context),
                u.overlap.as_str(),
                u.paused as i64,
                u.next_fire_at.map(ms),
                ms(crate::model::now())
            ])
        })
        .map_err(unavailable)?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("schedule {}", u.id)));
    }
    get_schedule(conn, &u.id)
}

pub fn delete_schedule(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let n = conn
        .execute("DELETE FROM schedules WHERE id = ?1", [id])
        .map_err(unavailable)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("schedule {id}")));
    }
    Ok(())
}

pub fn due_schedules(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Schedule>, StoreError> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules \
             WHERE next_fire_at IS NOT NULL AND next_fire_at <= ?1 ORDER BY next_fire_at LIMIT ?2"
        ))
        .map_err(unavailable)?;
    let rows = st
        .query_map(params![ms(now), limit as i64], schedule_row)
        .map_err(unavailable)?;
    collect(rows)
}

pub fn next_schedule_tick(conn: &Connection) -> Result<Option<Timestamp>, StoreError> {
    conn.prepare_cached("SELECT MIN(next_fire_at) FROM schedules")
        .and_then(|mut st| st.query_row([], |r| r.get::<_, Option<i64>>(0)))
        .map(|v| v.map(from_ms))
        .map_err(unavailable)
}

pub fn advance_schedule(
    conn: &Connection,
    id: &str,
    expect: Timestamp,
    next: Option<Timestamp>,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE schedules SET next_fire_at = ?3 WHERE id = ?1 AND next_fire_at = ?2",
        )
        .and_then(|mut st| st.execute(params![id, ms(expect), next.map(ms)]))
        .map_err(unavailable)?;
    Ok(n == 1)
}

/// Claims the tick of `fire` for run `run_id`: `Conflict` when the schedule is gone or
/// (for a tick) another server fired it first. Called in the savepoint creating the run.
pub fn fire_schedule(
    conn: &Connection,
    fire: &ScheduleFire,
    run_id: &str,
) -> Result<(), StoreError> {
    let at = ms(fire.fire_time);
    let n = match fire.claim {
        Some((expect, next)) => conn
            .prepare_cached(
                "UPDATE schedules SET next_fire_at = ?3, last_fire_time = ?4, last_run_id = ?5 \
                 WHERE id = ?1 AND next_fire_at = ?2",
            )
            .and_then(|mut st| {
                st.execute(params![
                    fire.schedule_id,
                    ms(expect),
                    next.map(ms),
                    at,
                    run_id
                ])
            }),
        None => conn
            .prepare_cached(
                "UPDATE schedules SET last_fire_time = ?2, last_run_id = ?3 WHERE id = ?1",
            )
            .and_then(|mut st| st.execute(params![fire.schedule_id, at, run_id])),
    }
    .map_err(unavailable)?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "the tick of schedule {} at {} was fired already",
            fire.schedule_id,
            fire.fire_time.to_rfc3339()
        )));
    }
    Ok(())
}

const WEBHOOK_COLUMNS: &str =
    "name, workflow_id, secret, secret_header, context, filter, created_at, created_by";

fn webhook_row(row: &Row<'_>) -> rusqlite::Result<Result<WebhookTrigger, StoreError>> {
    let secret: Option<String> = row.get(2)?;
    let header: String = row.get(3)?;
    let context: Option<String> = row.get(4)?;
    let (name, workflow_id, filter, created_at, created_by) = (
        row.get(0)?,
        row.get(1)?,
        row.get(5)?,
        from_ms(row.get(6)?),
        row.get(7)?,
    );
    Ok((|| {
        Ok(WebhookTrigger {
            name,
            workflow_id,
            secret: secret.map(Secret::new),
            secret_header: header.parse().map_err(|e: String| StoreError::Corrupt {
                what: e,
                cause: None,
            })?,
            context: context.as_deref().map(json).transpose()?,
            filter,
            created_at,
            created_by,
        })
    })())
}

pub fn create_webhook(conn: &Connection, t: WebhookTrigger) -> Result<WebhookTrigger, StoreError> {
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO webhook_triggers ({WEBHOOK_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (name) DO NOTHING"
        ))
        .and_then(|mut st| {
            st.execute(params![
                t.name,
                t.workflow_id,
                t.secret.as_ref().map(|s| s.expose().to_owned()),
                t.secret_header.as_str(),
                t.context.as_ref().map(to_json),
                t.filter,
                ms(t.created_at),
                t.created_by
            ])
        })
        .map_err(unavailable)?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "trigger {} already exists",
            t.name
        )));
    }
    Ok(t)
}

pub fn get_webhook(conn: &Connection, name: &str) -> Result<WebhookTrigger, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhook_triggers WHERE name = ?1"
    ))
    .and_then(|mut st| st.query_row([name], webhook_row).optional())
    .map_err(unavailable)?
    .ok_or_else(|| StoreError::NotFound(format!("trigger {name}")))?
}

pub fn list_webhooks(conn: &Connection) -> Result<Vec<WebhookTrigger>, StoreError> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook_triggers ORDER BY name"
        ))
        .map_err(unavailable)?;
    let rows = st.query_map([], webhook_row).map_err(unavailable)?;
    collect(rows)
}

pub fn delete_webhook(conn: &Connection, name: &str) -> Result<(), StoreError> {
    let n = conn
        .execute("DELETE FROM webhook_triggers WHERE name = ?1", [name])
        .map_err(unavailable)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("trigger {name}")));
    }
    Ok(())
}

pub fn event_row(r: &Row<'_>) -> rusqlite::Result<Result<StoredEvent, StoreError>> {
    let body: String = r.get(4)?;
    let (id, run_id, workflow_id, seq) = (
        r.get::<_, i64>(0)? as u64,
        r.get(1)?,
        r.get(2)?,
        r.get::<_, i64>(3)? as u64,
    );
    Ok(json(&body).map(|event| StoredEvent {
        id,
        run_id,
        workflow_id,
        seq,
        event,
    }))
}
