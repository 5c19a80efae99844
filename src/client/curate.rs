//! Subcommands that change what the server keeps: `retry` with edits (from a step, with
//! context members set, on another version), `delete` a finished run, `archive` a
//! workflow, and the `workflows` listing (by name prefix, archived ones on request).

use std::process::ExitCode;

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use super::http::ClientError;
use super::input::json_argument;
use super::listing::{self, Column, Listing};
use super::output::{self, Cell, Format};
use super::runs::{outcome, status};

/// `retry RUN [--from-step STEP] [--context JSON|@file] [--version N] [--reason TEXT]
/// [--wait] [--follow]`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    #[arg(value_name = "RUN")]
    run: String,
    /// Run again from this step (any step); default: the first failed or canceled one.
    #[arg(long, value_name = "STEP")]
    from_step: Option<String>,
    /// Context members to set before running again: a JSON object, or @FILE.
    #[arg(long, value_name = "JSON|@FILE")]
    context: Option<String>,
    /// Run this version of the workflow from now on (its steps before --from-step must be
    /// the run's).
    #[arg(long, value_name = "N")]
    version: Option<u32>,
    /// Why, kept in the run's re-run history.
    #[arg(long)]
    reason: Option<String>,
    /// Wait until the run ends again; the exit code tells how it ended.
    #[arg(long)]
    wait: bool,
    /// Print the run's log live until it ends (implies --wait).
    #[arg(long)]
    follow: bool,
}

/// `workflows [--name-prefix P] [--archived] [--limit N]`.
#[derive(Debug, Args)]
pub struct WorkflowsArgs {
    /// Only workflows whose name starts with this.
    #[arg(long, value_name = "PREFIX")]
    name_prefix: Option<String>,
    /// Archived workflows too.
    #[arg(long)]
    archived: bool,
    /// At most this many workflows.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

/// `retry`: `POST /v1/runs/{id}/retry` with the members given.
pub async fn retry(ctx: &Ctx, args: RetryArgs) -> Result<ExitCode, ClientError> {
    let mut body = json!({});
    if let Some(step) = &args.from_step {
        body["from_step"] = json!(step);
    }
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
    if let Some(reason) = &args.reason {
        body["reason"] = json!(reason);
    }
    let path = ["v1", "runs", args.run.as_str(), "retry"];
    let run = ctx.api.send(Method::POST, &path, &body).await?;
    let record = run["retries"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .unwrap_or_default();
    let mut line = format!(
        "{} retried; the run is {} (re-run {} from step {}",
        args.run,
        status(&run, ctx),
        record["n"],
        record["from_step"].as_str().unwrap_or("?")
    );
    if record["version"] != record["from_version"] {
        line.push_str(&format!(" on version {}", record["version"]));
    }
    line.push(')');
    outcome(ctx, &run, &line, args.wait, args.follow).await
}

/// `delete RUN`: removes a finished run with its steps, logs and events.
pub async fn delete(ctx: &Ctx, run: &str) -> Result<(), ClientError> {
    ctx.api.delete(&["v1", "runs", run]).await?;
    done(ctx, json!({"deleted": run}), &format!("Deleted {run}"))
}

/// `archive WORKFLOW`: hides a workflow from lists and stops new runs of it.
pub async fn archive(ctx: &Ctx, workflow: &str) -> Result<(), ClientError> {
    ctx.api.delete(&["v1", "workflows", workflow]).await?;
    let line = format!("Archived {workflow}: it starts no more runs; its runs and versions stay");
    done(ctx, json!({"archived": workflow}), &line)
}

fn done(ctx: &Ctx, json: Value, line: &str) -> Result<(), ClientError> {
    match ctx.format {
        Format::Json => output::print_json(&json)?,
        Format::Table => output::print(&format!("{line}\n"))?,
    }
    Ok(())
}

const WORKFLOWS: Listing = Listing {
    path: &["v1", "workflows"],
    columns: &[
        Column::text("WORKFLOW", "/id"),
        Column::text("NAME", "/name"),
        Column::text("VERSION", "/version"),
        Column::ago("UPDATED", "/created_at"),
        Column::with("ARCHIVED", |wf, now| {
            Cell::new(
                wf.get("archived_at")
                    .and_then(output::parse_time)
                    .map_or_else(String::new, |t| {
                        format!(
                            "{} by {}",
                            output::relative(t, now),
                            wf["archived_by"].as_str().unwrap_or("?")
                        )
                    }),
            )
        }),
    ],
    empty: "No workflows.",
    paged: true,
};

/// `workflows`: the latest version of each, newest first.
pub async fn workflows(ctx: &Ctx, args: WorkflowsArgs) -> Result<(), ClientError> {
    let mut query = Vec::new();
    if let Some(prefix) = args.name_prefix {
        query.push(("name_prefix", prefix));
    }
    if args.archived {
        query.push(("archived", "true".to_owned()));
    }
    listing::show(
        &ctx.api,
        &WORKFLOWS,
        &query,
        Some(args.limit.max(1)),
        ctx.format,
        ctx.style,
    )
    .await
}
