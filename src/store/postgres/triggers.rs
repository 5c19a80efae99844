//! Schedules, webhook triggers and filtered event reads of the PostgreSQL store; each
//! function mirrors the embedded store's function of the same name. A tick is claimed in
//! the savepoint of the run it starts ([`fire_schedule`]): two replicas updating the same
//! schedule row serialise on its row lock, and the second finds `next_fire_at` moved.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::db_error;
use super::rows::{from_ms, get, json, ms, parse, to_json};
use super::writer::Fault;
use crate::model::{Timestamp, now};
use crate::secret::Secret;
use crate::store::{
    EventFilter, Schedule, ScheduleFire, ScheduleUpdate, StoreError, StoredEvent, WebhookTrigger,
};

const SCHEDULE_COLUMNS: &str = "id, workflow_id, cron, timezone, context, overlap, paused, \
     next_fire_at, last_fire_time, last_run_id, created_at, updated_at, created_by";

fn opt_ms(row: &Row, i: usize) -> Result<Option<Timestamp>, StoreError> {
    Ok(get::<Option<i64>>(row, i)?.map(from_ms))
}

fn schedule_row(row: &Row) -> Result<Schedule, StoreError> {
    Ok(Schedule {
        id: get(row, 0)?,
        workflow_id: get(row, 1)?,
        cron: get(row, 2)?,
        timezone: get(row, 3)?,
        context: json(get::<&str>(row, 4)?)?,
        overlap: parse(get::<&str>(row, 5)?)?,
        paused: get(row, 6)?,
        next_fire_at: opt_ms(row, 7)?,
        last_fire_time: opt_ms(row, 8)?,
        last_run_id: get(row, 9)?,
        created_at: from_ms(get(row, 10)?),
        updated_at: from_ms(get(row, 11)?),
        created_by: get(row, 12)?,
    })
}

pub async fn create_schedule<C: GenericClient>(c: &C, s: &Schedule) -> Result<Schedule, Fault> {
    let inserted = c
        .execute(
            &format!(
                "INSERT INTO schedules ({SCHEDULE_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (id) DO NOTHING"
            ),
            &[
                &s.id,
                &s.workflow_id,
                &s.cron,
                &s.timezone,
                &to_json(&s.context),
                &s.overlap.as_str(),
                &s.paused,
                &s.next_fire_at.map(ms),
                &s.last_fire_time.map(ms),
                &s.last_run_id,
                &ms(s.created_at),
                &ms(s.updated_at),
                &s.created_by,
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("schedule {} already exists", s.id)).into());
    }
    Ok(s.clone())
}

pub async fn get_schedule<C: GenericClient>(c: &C, id: &str) -> Result<Schedule, StoreError> {
    let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1");
    let row = c.query_opt(&sql, &[&id]).await.map_err(db_error)?;
    schedule_row(&row.ok_or_else(|| StoreError::NotFound(format!("schedule {id}")))?)
}

pub async fn list_schedules<C: GenericClient>(c: &C) -> Result<Vec<Schedule>, StoreError> {
    let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY id");
    let rows = c.query(&sql, &[]).await.map_err(db_error)?;
    rows.iter().map(schedule_row).collect()
}

pub async fn update_schedule<C: GenericClient>(
    c: &C,
    u: &ScheduleUpdate,
) -> Result<Schedule, Fault> {
    let sql = format!(
        "UPDATE schedules SET workflow_id = $2, cron = $3, timezone = $4, context = $5, \
         overlap = $6, paused = $7, next_fire_at = $8, updated_at = $9 WHERE id = $1 \
         RETURNING {SCHEDULE_COLUMNS}"
    );
    let row = c
        .query_opt(
            &sql,
            &[
                &u.id,
                &u.workflow_id,
                &u.cron,
                &u.timezone,
                &to_json(&u.context),
                &u.overlap.as_str(),
                &u.paused,
                &u.next_fire_at.map(ms),
                &ms(now()),
            ],
        )
        .await?;
    let row = row.ok_or_else(|| StoreError::NotFound(format!("schedule {}", u.id)))?;
    Ok(schedule_row(&row)?)
}

pub async fn delete_schedule<C: GenericClient>(c: &C, id: &str) -> Result<(), Fault> {
    let n = c
        .execute("DELETE FROM schedules WHERE id = $1", &[&id])
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("schedule {id}")).into());
    }
    Ok(())
}

pub async fn due_schedules<C: GenericClient>(
    c: &C,
    at: Timestamp,
    limit: usize,
) -> Result<Vec<Schedule>, StoreError> {
    let sql = format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules \
         WHERE next_fire_at IS NOT NULL AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2"
    );
    let rows = c
        .query(&sql, &[&ms(at), &(limit as i64)])
        .await
        .map_err(db_error)?;
    rows.iter().map(schedule_row).collect()
}

pub async fn next_schedule_tick<C: GenericClient>(c: &C) -> Result<Option<Timestamp>, StoreError> {
    let row = c
        .query_one("SELECT MIN(next_fire_at) FROM schedules", &[])
        .await
        .map_err(db_error)?;
    opt_ms(&row, 0)
}

pub async fn advance_schedule<C: GenericClient>(
    c: &C,
    id: &str,
    expect: Timestamp,
    next: Option<Timestamp>,
) -> Result<bool, Fault> {
    let n = c
        .execute(
            "UPDATE schedules SET next_fire_at = $3 WHERE id = $1 AND next_fire_at = $2",
            &[&id, &ms(expect), &next.map(ms)],
        )
        .await?;
    Ok(n == 1)
}

/// Claims the tick of `fire` for run `run_id`: `Conflict` when the schedule is gone or
/// (for a tick) another server fired it first. Called in the savepoint creating the run.
pub async fn fire_schedule<C: GenericClient>(
    c: &C,
    fire: &ScheduleFire,
    run_id: &str,
) -> Result<(), Fault> {
    let at = ms(fire.fire_time);
    let n = match fire.claim {
        Some((expect, next)) => {
            c.execute(
                "UPDATE schedules SET next_fire_at = $3, last_fire_time = $4, last_run_id = $5 \
                 WHERE id = $1 AND next_fire_at = $2",
                &[&fire.schedule_id, &ms(expect), &next.map(ms), &at, &run_id],
            )
            .await?
        }
        None => {
            c.execute(
                "UPDATE schedules SET last_fire_time = $2, last_run_id = $3 WHERE id = $1",
                &[&fire.schedule_id, &at, &run_id],
            )
            .await?
        }
    };
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "the tick of schedule {} at {} was fired already",
            fire.schedule_id,
            fire.fire_time.to_rfc3339()
        ))
        .into());
    }
    Ok(())
}

const WEBHOOK_COLUMNS: &str =
    "name, workflow_id, secret, secret_header, context, filter, created_at, created_by";

fn webhook_row(row: &Row) -> Result<WebhookTrigger, StoreError> {
    let header: &str = get(row, 3)?;
    Ok(WebhookTrigger {
        name: get(row, 0)?,
        workflow_id: get(row, 1)?,
        secret: get::<Option<String>>(row, 2)?.map(Secret::new),
        secret_header: header.parse().map_err(|e: String| StoreError::Corrupt {
            what: e,
            cause: None,
        })?,
        context: get::<Option<&str>>(row, 4)?.map(json).transpose()?,
        filter: get(row, 5)?,
        created_at: from_ms(get(row, 6)?),
        created_by: get(row, 7)?,
    })
}

pub async fn create_webhook<C: GenericClient>(
    c: &C,
    t: &WebhookTrigger,
) -> Result<WebhookTrigger, Fault> {
    let inserted = c
        .execute(
            &format!(
                "INSERT INTO webhook_triggers ({WEBHOOK_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING"
            ),
            &[
                &t.name,
                &t.workflow_id,
                &t.secret.as_ref().map(|s| s.expose().to_owned()),
                &t.secret_header.as_str(),
                &t.context.as_ref().map(to_json),
                &t.filter,
                &ms(t.created_at),
                &t.created_by,
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("trigger {} already exists", t.name)).into());
    }
    Ok(t.clone())
}

pub async fn get_webhook<C: GenericClient>(
    c: &C,
    name: &str,
) -> Result<WebhookTrigger, StoreError> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhook_triggers WHERE name = $1");
    let row = c.query_opt(&sql, &[&name]).await.map_err(db_error)?;
    webhook_row(&row.ok_or_else(|| StoreError::NotFound(format!("trigger {name}")))?)
}

pub async fn list_webhooks<C: GenericClient>(c: &C) -> Result<Vec<WebhookTrigger>, StoreError> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhook_triggers ORDER BY name");
    let rows = c.query(&sql, &[]).await.map_err(db_error)?;
    rows.iter().map(webhook_row).collect()
}

pub async fn delete_webhook<C: GenericClient>(c: &C, name: &str) -> Result<(), Fault> {
    let n = c
        .execute("DELETE FROM webhook_triggers WHERE name = $1", &[&name])
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("trigger {name}")).into());
    }
    Ok(())
}

pub async fn list_events<C: GenericClient>(
    c: &C,
    filter: &EventFilter,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(after.min(i64::MAX as u64) as i64),
        Box::new(upto as i64),
    ];
    let mut sql =
        "SELECT id, run_id, workflow_id, seq, body FROM events WHERE id > $1 AND id <= $2"
            .to_owned();
    if let Some(run) = &filter.run_id {
        args.push(Box::new(run.clone()));
        sql.push_str(&format!(" AND run_id = ${}", args.len()));
    }
    if let Some(wf) = &filter.workflow_id {
        args.push(Box::new(wf.clone()));
        sql.push_str(&format!(" AND workflow_id = ${}", args.len()));
    }
    if !filter.types.is_empty() {
        args.push(Box::new(filter.types.clone()));
        sql.push_str(&format!(
            " AND (body::json ->> 'type') = ANY(${})",
            args.len()
        ));
    }
    if let Some(before) = filter.before {
        args.push(Box::new(before.min(i64::MAX as u64) as i64));
        sql.push_str(&format!(" AND id < ${}", args.len()));
    }
    let order = if filter.newest_first { "DESC" } else { "ASC" };
    args.push(Box::new(limit as i64));
    sql.push_str(&format!(" ORDER BY id {order} LIMIT ${}", args.len()));
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = c.query(&sql, &params).await.map_err(db_error)?;
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
