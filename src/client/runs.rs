//! Run subcommands that start and show runs: `run`, `runs`, `get` (with the run's re-run
//! history).

use std::process::ExitCode;

use chrono::Utc;
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use super::follow::follow;
use super::http::ClientError;
use super::input::json_argument;
use super::listing::{self, Column, Listing};
use super::output::{self, Cell, Color, Format, Table};
use super::search::RunFilters;
use crate::model::RunStatus;

/// `run WORKFLOW [--context JSON|@file] [--version N] [--wait] [--follow]`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow's id.
    #[arg(value_name = "WORKFLOW")]
    workflow: String,
    /// The run's context: a JSON object, or @FILE (JSON or YAML; @- reads standard input).
    #[arg(long, value_name = "JSON|@FILE")]
    context: Option<String>,
    /// Run this version instead of the latest.
    #[arg(long, value_name = "N")]
    version: Option<u32>,
    /// Wait until the run ends; the exit code tells how it ended.
    #[arg(long)]
    wait: bool,
    /// Print the run's log live until it ends (implies --wait).
    #[arg(long)]
    follow: bool,
}

/// `runs [filters] [--limit N]` (see [`RunFilters`]).
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    filters: RunFilters,
    /// At most this many runs.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

const RUNS: Listing = Listing {
    path: &["v1", "runs"],
    columns: &[
        Column::text("RUN", "/id"),
        Column::text("WORKFLOW", "/workflow_id"),
        Column::text("VERSION", "/workflow_version"),
        Column::status("STATUS", "/status"),
        Column::with("STEP", |run, _| Cell::new(current_step(run))),
        Column::ago("CREATED", "/created_at"),
        Column::with("DURATION", |run, now| {
            Cell::new(output::elapsed(run, now).unwrap_or_else(|| "-".into()))
        }),
    ],
    empty: "No runs.",
    paged: true,
};

/// `runs`: summaries (`view=summary`), newest first; `get RUN` shows a whole run.
pub async fn list(ctx: &Ctx, args: ListArgs) -> Result<(), ClientError> {
    let filters = args.filters.query(Utc::now())?;
    let mut query: Vec<(&str, String)> = filters
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    query.push(("view", "summary".into()));
    listing::show(
        &ctx.api,
        &RUNS,
        &query,
        Some(args.limit.max(1)),
        ctx.format,
        ctx.style,
    )
    .await
}

/// `run`: starts the run, then waits or follows when asked; the exit code tells the outcome.
pub async fn start(ctx: &Ctx, args: RunArgs) -> Result<ExitCode, ClientError> {
    let mut body = json!({ "workflow_id": args.workflow });
    if let Some(context) = &args.context {
        let context = json_argument("--context", context)?;
        if !context.is_object() {
            return Err(ClientError::Usage("--context must be a JSON object".into()));
        }
        body["context"] = context;
    }
    if let Some(version) = args.version {
        body["version"] = json!(version);
    }
    let run = ctx.api.send(Method::POST, &["v1", "runs"], &body).await?;
    let line = started(&run, ctx);
    outcome(ctx, &run, &line, args.wait, args.follow).await
}

/// After a run was started (or started again): prints it, or with `wait` or `follow`
/// waits for its end (printing its log as it comes with `follow`) and tells how it ended.
pub(super) async fn outcome(
    ctx: &Ctx,
    run: &Value,
    line: &str,
    wait: bool,
    live: bool,
) -> Result<ExitCode, ClientError> {
    let id = run["id"].as_str().unwrap_or_default().to_owned();
    if !wait && !live {
        return match ctx.format {
            Format::Json => output::print_json(run),
            Format::Table => output::print(&format!("{line}\n")),
        }
        .map(|()| ExitCode::SUCCESS)
        .map_err(ClientError::from);
    }
    if live && ctx.format == Format::Table {
        output::print(&format!("{line}\n"))?;
    }
    follow(&ctx.api, &id, |entry| {
        if !live {
            return Ok(());
        }
        match ctx.format {
            Format::Json => output::print_json_line(entry),
            Format::Table => output::print(&output::log_line(entry, ctx.style)),
        }
        .map_err(ClientError::from)
    })
    .await?;
    let run = ctx.api.get(&["v1", "runs", &id], &[]).await?;
    match (ctx.format, live) {
        (Format::Json, true) => output::print_json_line(&run)?,
        (Format::Json, false) => output::print_json(&run)?,
        (Format::Table, _) => output::print(&finished(&run, ctx))?,
    }
    Ok(exit_code(&run))
}

/// 0 when the run `SUCCEEDED`, 1 otherwise (DESIGN §13).
fn exit_code(run: &Value) -> ExitCode {
    match run["status"].as_str().map(str::parse::<RunStatus>) {
        Some(Ok(RunStatus::Succeeded)) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn started(run: &Value, ctx: &Ctx) -> String {
    format!(
        "Started {} (workflow {}, version {}): {}",
        run["id"].as_str().unwrap_or_default(),
        run["workflow_id"].as_str().unwrap_or_default(),
        run["workflow_version"],
        status(run, ctx)
    )
}

fn finished(run: &Value, ctx: &Ctx) -> String {
    let mut text = format!(
        "{} {}",
        run["id"].as_str().unwrap_or_default(),
        status(run, ctx)
    );
    if let Some(took) = output::elapsed(run, Utc::now()) {
        text.push_str(&format!(" after {took}"));
    }
    if let Some(error) = run["error"].as_str() {
        text.push_str(&format!(": {error}"));
    }
    text.push('\n');
    text
}

pub(super) fn status(run: &Value, ctx: &Ctx) -> String {
    let s = run["status"].as_str().unwrap_or("?");
    ctx.style.paint(s, Color::of_status(s))
}

/// The name of the run's first unfinished step, `-` when all are finished.
fn current_step(run: &Value) -> String {
    run["current_step"]
        .as_u64()
        .and_then(|i| run["steps"].get(i as usize))
        .and_then(|s| s["name"].as_str())
        .unwrap_or("-")
        .to_owned()
}

/// `get`: the run's summary, steps and approvals.
pub async fn get(ctx: &Ctx, id: &str) -> Result<(), ClientError> {
    let run = ctx.api.get(&["v1", "runs", id], &[]).await?;
    match ctx.format {
        Format::Json => output::print_json(&run)?,
        Format::Table => {
            let kept = if run["finished_at"].is_string() {
                retention_of_runs(ctx).await
            } else {
                None
            };
            output::print(&describe(&run, ctx, kept))?
        }
    }
    Ok(())
}

/// `retention.runs` of the server in milliseconds, when it deletes finished runs and says
/// so (a server without `/v1/server`, or a failed read, shows nothing).
async fn retention_of_runs(ctx: &Ctx) -> Option<u64> {
    let server = ctx.api.get(&["v1", "server"], &[]).await.ok()?;
    server["retention"]["runs_ms"].as_u64()
}

/// `kept` is the server's `retention.runs` in milliseconds, for a finished run.
fn describe(run: &Value, ctx: &Ctx, kept: Option<u64>) -> String {
    let now = Utc::now();
    let text = |v: &Value| listing::text(Some(v));
    let mut pairs = vec![
        ("Run", text(&run["id"])),
        (
            "Workflow",
            format!(
                "{} (version {})",
                text(&run["workflow_id"]),
                run["workflow_version"]
            ),
        ),
        ("Status", status(run, ctx)),
        (
            "Created",
            format!(
                "{} ({})",
                ago(&run["created_at"], now),
                text(&run["created_at"])
            ),
        ),
    ];
    if let Some(took) = output::elapsed(run, now) {
        pairs.push(("Duration", took));
    }
    if let Some(parent) = run["parent_run_id"].as_str() {
        pairs.push(("Parent", parent.to_owned()));
    }
    if let Some(error) = run["error"].as_str() {
        pairs.push(("Error", error.to_owned()));
    }
    if let Some(at) = super::server::deleted_after(&run["finished_at"], kept) {
        let when = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        pairs.push((
            "Kept",
            format!("until {when} ({})", output::relative(at, now)),
        ));
    }
    pairs.push(("Context", run["context"].to_string()));
    let mut out: String = pairs
        .iter()
        .map(|(k, v)| format!("{:<10}{v}\n", format!("{k}:")))
        .collect();
    let mut steps = Table::new(["STEP", "ACTION", "STATUS", "ATTEMPTS", "DURATION", "ERROR"]);
    for step in run["steps"].as_array().into_iter().flatten() {
        steps.row(vec![
            Cell::new(text(&step["name"])),
            Cell::new(text(&step["action"])),
            Cell::status(step["status"].as_str().unwrap_or("-")),
            Cell::new(attempts(step)),
            Cell::new(output::elapsed(step, now).unwrap_or_default()),
            Cell::new(one_line(
                &step["error"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| waiting(step))
                    .unwrap_or_default(),
            )),
        ]);
    }
    out.push('\n');
    out.push_str(&steps.render(ctx.style));
    let approvals = run["approvals"].as_array().filter(|a| !a.is_empty());
    if let Some(approvals) = approvals {
        let mut table = Table::new(["APPROVAL", "DECISION", "BY", "AT", "COMMENT"]);
        for a in approvals {
            table.row(vec![
                Cell::new(text(&a["step"])),
                Cell::new(text(&a["decision"])),
                Cell::new(text(&a["by"])),
                Cell::new(ago(&a["at"], now)),
                Cell::new(a["comment"].as_str().unwrap_or_default()),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render(ctx.style));
    }
    let retries = run["retries"].as_array().filter(|r| !r.is_empty());
    if let Some(retries) = retries {
        let mut table = Table::new(["RE-RUN", "BY", "AT", "FROM", "VERSION", "WAS", "REASON"]);
        for r in retries {
            let version = match (r["from_version"].as_u64(), r["version"].as_u64()) {
                (Some(a), Some(b)) if a != b => format!("{a}→{b}"),
                (_, b) => b.map_or_else(|| "-".into(), |b| b.to_string()),
            };
            table.row(vec![
                Cell::new(text(&r["n"])),
                Cell::new(text(&r["by"])),
                Cell::new(ago(&r["at"], now)),
                Cell::new(text(&r["from_step"])),
                Cell::new(version),
                Cell::status(r["previous_status"].as_str().unwrap_or("-")),
                Cell::new(one_line(r["reason"].as_str().unwrap_or_default())),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render(ctx.style));
    }
    out
}

/// A step's attempts; for a `foreach` step, its items done out of all.
fn attempts(step: &Value) -> String {
    match step["items"].as_array() {
        Some(items) => {
            let done = items.iter().filter(|i| i["status"] == "SUCCEEDED").count();
            format!("{done}/{} items", items.len())
        }
        None => step["attempts"].as_array().map_or(0, Vec::len).to_string(),
    }
}

/// What a `WAITING` step waits for.
fn waiting(step: &Value) -> Option<String> {
    let w = &step["waiting"];
    if step["status"] != "WAITING" {
        return None;
    }
    let text = |v: &Value| listing::text(Some(v));
    Some(match w["for"].as_str()? {
        "timer" => format!("waits until {}", text(&w["until"])),
        "event" => format!("waits for event {}", text(&w["name"])),
        "child" => format!("waits for child run {}", text(&w["run_id"])),
        _ => return None,
    })
}

fn ago(value: &Value, now: chrono::DateTime<Utc>) -> String {
    output::parse_time(value).map_or_else(|| "-".into(), |t| output::relative(t, now))
}

/// A message on one line, cut to a width a table can hold.
fn one_line(text: &str) -> String {
    const MAX: usize = 80;
    let flat = text.replace(['\r', '\n'], " ");
    if flat.chars().count() <= MAX {
        return flat;
    }
    let cut: String = flat.chars().take(MAX - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_succeeded_run_exits_zero() {
        assert_eq!(
            exit_code(&json!({"status": "SUCCEEDED"})),
            ExitCode::SUCCESS
        );
        assert_eq!(exit_code(&json!({"status": "FAILED"})), ExitCode::FAILURE);
        assert_eq!(exit_code(&json!({"status": "CANCELED"})), ExitCode::FAILURE);
    }

    #[test]
    fn the_current_step_is_named_until_all_are_finished() {
        let run = json!({"current_step": 1, "steps": [{"name": "a"}, {"name": "b"}]});
        assert_eq!(current_step(&run), "b");
        assert_eq!(
            current_step(&json!({"current_step": 2, "steps": [{"name": "a"}]})),
            "-"
        );
    }
}
