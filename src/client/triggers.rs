//! What starts runs besides `run`: `schedules` (list, pause, resume, trigger now) and
//! `triggers` (the webhook triggers and where their deliveries go).

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use super::http::ClientError;
use super::listing::{self, Column};
use super::output::{self, Cell, Color, Format};
use super::runs::status;

/// `schedules [pause|resume|trigger ID]`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    action: Option<ScheduleAction>,
}

/// What to do with one schedule; without an action, every schedule is listed.
#[derive(Debug, Subcommand)]
enum ScheduleAction {
    /// Stop firing until resumed (ticks that fall while paused never fire).
    Pause {
        #[arg(value_name = "SCHEDULE")]
        id: String,
    },
    /// Fire again from the next tick after now.
    Resume {
        #[arg(value_name = "SCHEDULE")]
        id: String,
    },
    /// Start a run of the schedule now, whatever its overlap policy, even while paused.
    Trigger {
        #[arg(value_name = "SCHEDULE")]
        id: String,
    },
}

const SCHEDULES: &[Column] = &[
    Column::text("SCHEDULE", "/id"),
    Column::text("WORKFLOW", "/workflow_id"),
    Column::text("CRON", "/cron"),
    Column::text("TIMEZONE", "/timezone"),
    Column::text("OVERLAP", "/overlap"),
    Column::with("NEXT", next_tick),
    Column::ago("LAST FIRED", "/last_fire_time"),
    Column::text("LAST RUN", "/last_run_id"),
];

const TRIGGERS: &[Column] = &[
    Column::text("TRIGGER", "/name"),
    Column::text("WORKFLOW", "/workflow_id"),
    Column::text("URL", "/url"),
    Column::with("PROOF", |t, _| Cell::new(proof(t))),
    Column::text("FILTER", "/filter"),
    Column::ago("CREATED", "/created_at"),
];

/// `schedules`.
pub async fn schedules(ctx: &Ctx, args: ScheduleArgs) -> Result<(), ClientError> {
    let (id, verb) = match args.action {
        None => return list(ctx, "schedules", SCHEDULES, "No schedules.").await,
        Some(ScheduleAction::Trigger { id }) => return trigger(ctx, &id).await,
        Some(ScheduleAction::Pause { id }) => (id, "pause"),
        Some(ScheduleAction::Resume { id }) => (id, "resume"),
    };
    let path = ["v1", "schedules", id.as_str(), verb];
    let schedule = ctx.api.send(Method::POST, &path, &json!({})).await?;
    match ctx.format {
        Format::Json => output::print_json(&schedule)?,
        Format::Table => output::print(&format!(
            "{} {id}: next tick {}\n",
            if verb == "pause" { "Paused" } else { "Resumed" },
            next_tick(&schedule, Utc::now()).text
        ))?,
    }
    Ok(())
}

/// `triggers`.
pub async fn triggers(ctx: &Ctx) -> Result<(), ClientError> {
    list(ctx, "triggers", TRIGGERS, "No webhook triggers.").await
}

/// `GET /v1/{what}` (a list without paging) as a table, or as it came with `-o json`.
async fn list(ctx: &Ctx, what: &str, columns: &[Column], empty: &str) -> Result<(), ClientError> {
    let page = ctx.api.get(&["v1", what], &[]).await?;
    let Some(items) = page["items"].as_array() else {
        return Err(ClientError::Protocol("a list answer has no items".into()));
    };
    match ctx.format {
        Format::Json => output::print_json(&json!({ "items": items }))?,
        Format::Table if items.is_empty() => output::print(&format!("{empty}\n"))?,
        Format::Table => {
            output::print(&listing::table(columns, items, Utc::now()).render(ctx.style))?
        }
    }
    Ok(())
}

/// `schedules trigger ID`: the run it started.
async fn trigger(ctx: &Ctx, id: &str) -> Result<(), ClientError> {
    let path = ["v1", "schedules", id, "trigger"];
    let run = ctx.api.send(Method::POST, &path, &json!({})).await?;
    match ctx.format {
        Format::Json => output::print_json(&run)?,
        Format::Table => output::print(&format!(
            "Started {} (schedule {id}, workflow {}): {}\n",
            run["id"].as_str().unwrap_or_default(),
            run["workflow_id"].as_str().unwrap_or_default(),
            status(&run, ctx)
        ))?,
    }
    Ok(())
}

/// `in 3s (2025-03-30T01:00:00Z)`, or `paused`.
fn next_tick(schedule: &Value, now: DateTime<Utc>) -> Cell {
    match output::parse_time(&schedule["next_fire_at"]) {
        Some(at) => Cell::new(format!(
            "{} ({})",
            output::relative(at, now),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
        None if schedule["paused"] == true => Cell {
            text: "paused".into(),
            color: Some(Color::Yellow),
        },
        None => Cell::new("-"),
    }
}

/// How deliveries prove themselves: the signature header, or an admin token.
fn proof(trigger: &Value) -> String {
    match trigger["secret_header"].as_str() {
        Some(header) if trigger["has_secret"] == true => header.to_owned(),
        _ => "admin token".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::output::Style;

    #[test]
    fn schedules_show_the_next_tick_or_that_they_are_paused() {
        let now = output::parse_time(&json!("2025-03-30T00:59:57Z")).unwrap();
        let items = [
            json!({"id": "nightly", "workflow_id": "backup", "cron": "30 2 * * *",
                   "timezone": "Europe/Berlin", "overlap": "skip", "paused": false,
                   "next_fire_at": "2025-03-30T01:00:00Z"}),
            json!({"id": "hourly", "workflow_id": "report", "cron": "@hourly",
                   "timezone": "UTC", "overlap": "allow", "paused": true,
                   "next_fire_at": null, "last_fire_time": "2025-03-30T00:00:00Z",
                   "last_run_id": "run_1"}),
        ];
        let text = listing::table(SCHEDULES, &items, now).render(Style::plain());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SCHEDULE  WORKFLOW  CRON"), "{text}");
        assert!(
            lines[1].contains("just now (2025-03-30T01:00:00Z)"),
            "{text}"
        );
        assert!(lines[2].contains("paused"), "{text}");
        assert!(lines[2].ends_with("59m ago     run_1"), "{text}");
    }

    #[test]
    fn triggers_show_how_deliveries_prove_themselves() {
        assert_eq!(
            proof(&json!({"has_secret": true, "secret_header": "X-Gitlab-Token"})),
            "X-Gitlab-Token"
        );
        assert_eq!(proof(&json!({"has_secret": false})), "admin token");
    }
}
