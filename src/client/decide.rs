//! Subcommands that act on a run: `approve`, `reject`, `cancel`, `event` (`retry` is in
//! [`super::curate`]).

use clap::Args;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::Ctx;
use super::http::ClientError;
use super::input::json_argument;
use super::output::{self, Format};
use super::runs::status;

/// `approve RUN [--step] [--comment] [--input JSON|@file]`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[arg(value_name = "RUN")]
    run: String,
    /// The waiting step to decide, when several wait.
    #[arg(long)]
    step: Option<String>,
    /// A comment recorded with the decision.
    #[arg(long)]
    comment: Option<String>,
    /// Input merged into the run's context (checked against the step's input_schema).
    #[arg(long, value_name = "JSON|@FILE")]
    input: Option<String>,
}

/// `reject RUN [--step] [--comment]`.
#[derive(Debug, Args)]
pub struct RejectArgs {
    #[arg(value_name = "RUN")]
    run: String,
    /// The waiting step to decide, when several wait.
    #[arg(long)]
    step: Option<String>,
    /// A comment recorded with the decision.
    #[arg(long)]
    comment: Option<String>,
}

/// `event RUN NAME [--data JSON|@file]`.
#[derive(Debug, Args)]
pub struct EventArgs {
    #[arg(value_name = "RUN")]
    run: String,
    /// The event's name.
    #[arg(value_name = "NAME")]
    name: String,
    /// The event's data: JSON, or @FILE.
    #[arg(long, value_name = "JSON|@FILE")]
    data: Option<String>,
}

/// `approve`.
pub async fn approve(ctx: &Ctx, args: ApproveArgs) -> Result<(), ClientError> {
    let mut body = decision(args.step, args.comment);
    if let Some(input) = &args.input {
        body.insert("input".into(), json_argument("--input", input)?);
    }
    decide(ctx, &args.run, "approve", Value::Object(body)).await
}

/// `reject`.
pub async fn reject(ctx: &Ctx, args: RejectArgs) -> Result<(), ClientError> {
    let body = decision(args.step, args.comment);
    decide(ctx, &args.run, "reject", Value::Object(body)).await
}

/// `cancel`: a bodiless action on a run.
pub async fn act(ctx: &Ctx, run: &str, action: &str) -> Result<(), ClientError> {
    decide(ctx, run, action, json!({})).await
}

fn decision(step: Option<String>, comment: Option<String>) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(step) = step {
        body.insert("step".into(), json!(step));
    }
    if let Some(comment) = comment {
        body.insert("comment".into(), json!(comment));
    }
    body
}

async fn decide(ctx: &Ctx, id: &str, action: &str, body: Value) -> Result<(), ClientError> {
    let run = ctx
        .api
        .send(Method::POST, &["v1", "runs", id, action], &body)
        .await?;
    let done = match action {
        "approve" => "approved",
        "reject" => "rejected",
        _ => "canceled",
    };
    match ctx.format {
        Format::Json => output::print_json(&run)?,
        Format::Table => {
            output::print(&format!("{id} {done}; the run is {}\n", status(&run, ctx)))?
        }
    }
    Ok(())
}

/// `event`: `POST /v1/runs/{id}/events/{name}` with `{"data"}`.
pub async fn event(ctx: &Ctx, args: EventArgs) -> Result<(), ClientError> {
    let mut body = json!({});
    if let Some(data) = &args.data {
        body["data"] = json_argument("--data", data)?;
    }
    let path = [
        "v1",
        "runs",
        args.run.as_str(),
        "events",
        args.name.as_str(),
    ];
    let answer = ctx.api.send(Method::POST, &path, &body).await?;
    match ctx.format {
        Format::Json => output::print_json(&answer)?,
        Format::Table => output::print(&format!("Sent event {} to {}\n", args.name, args.run))?,
    }
    Ok(())
}
