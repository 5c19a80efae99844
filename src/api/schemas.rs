//! The shapes of request and response bodies that handlers read or build as plain JSON,
//! for the OpenAPI document only. Records served as they are (runs, log entries) derive
//! their schemas in [`crate::model`]; the workflow definition's schema is the JSON Schema
//! the server validates with (see [`super::openapi`]).

#![allow(dead_code)] // the fields exist to be described, never built

use serde::Deserialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::model::{LogEntry, RunStatus, StepStatus};

/// An error answer (`application/problem+json`, RFC 9457).
#[derive(ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[schema(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: String,
    /// For bad input: one entry per violation.
    errors: Option<Vec<Violation>>,
}

/// One violation of a request's rules.
#[derive(ToSchema)]
pub struct Violation {
    /// JSON pointer to the offending member (`/steps/1/name`), `""` for the whole body.
    pointer: String,
    message: String,
}

/// A workflow definition; served with its `id`, `version`, `created_at`, `created_by`
/// and `restored_from`. The document replaces this placeholder with the JSON Schema the
/// server validates definitions with.
pub struct Workflow;

impl PartialSchema for Workflow {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().build().into()
    }
}

impl ToSchema for Workflow {}

/// `POST /v1/workflows` from a template.
#[derive(ToSchema)]
pub struct FromTemplate {
    template: String,
    name: Option<String>,
    id: Option<String>,
    /// Checked against the template's `params` schema.
    #[schema(value_type = Object)]
    params: Option<Value>,
}

/// The body of `POST /v1/workflows`: a definition or a template instantiation.
pub struct NewWorkflow;

impl PartialSchema for NewWorkflow {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(Ref::from_schema_name(Workflow::name()))
                .item(Ref::from_schema_name(FromTemplate::name()))
                .build(),
        ))
    }
}

impl ToSchema for NewWorkflow {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((FromTemplate::name().into(), FromTemplate::schema()));
        schemas.push((Workflow::name().into(), Workflow::schema()));
    }
}

/// A page of workflows (latest versions) or of one workflow's versions.
#[derive(ToSchema)]
pub struct WorkflowList {
    items: Vec<Workflow>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// `POST /v1/workflows/{id}/rollback`.
#[derive(ToSchema)]
pub struct Rollback {
    /// The version whose definition becomes the new version.
    #[schema(minimum = 1)]
    version: u32,
}

/// The answer of `POST /v1/workflows/validate`.
#[derive(ToSchema)]
pub struct Valid {
    valid: bool,
}

/// A template: a parameterised workflow. Pack templates are read-only.
#[derive(ToSchema)]
pub struct Template {
    name: String,
    description: Option<String>,
    /// JSON Schema of the parameters.
    #[schema(value_type = Object)]
    params: Option<Value>,
    /// A workflow definition whose strings may hold `[[ params.x ]]`.
    #[schema(value_type = Object)]
    workflow: Value,
    /// `pack` or `stored` (answers only).
    source: Option<String>,
}

/// A page of templates.
#[derive(ToSchema)]
pub struct TemplateList {
    items: Vec<Template>,
    next_cursor: Option<String>,
}

/// `POST /v1/runs`.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    #[schema(min_length = 1)]
    workflow_id: String,
    /// The latest version when absent.
    #[schema(minimum = 1)]
    version: Option<u32>,
    /// The run's initial context; `{}` when absent.
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
}

/// A page of runs, newest first: [`crate::model::Run`]s, or [`RunSummary`]s with
/// `view=summary`.
#[derive(ToSchema)]
pub struct RunList {
    items: Vec<RunItem>,
    /// Pass as `cursor` for the next page; `null` on the last. A full page may hold fewer
    /// than `limit` runs and still have one (it ends at 16 MiB of contexts and outputs).
    next_cursor: Option<String>,
}

/// An item of a run list.
pub struct RunItem;

impl PartialSchema for RunItem {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(Ref::from_schema_name("Run"))
                .item(Ref::from_schema_name(RunSummary::name()))
                .build(),
        ))
    }
}

impl ToSchema for RunItem {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((RunSummary::name().into(), RunSummary::schema()));
        RunSummary::schemas(schemas);
    }
}

/// A run as light lists show it (`view=summary`): no context, step outputs, attempts,
/// foreach items or waits, approvals or re-run history.
#[derive(ToSchema)]
pub struct RunSummary {
    id: String,
    workflow_id: String,
    workflow_version: u32,
    status: RunStatus,
    current_step: usize,
    /// The run that started this one as a child (`workflow` steps).
    parent_run_id: Option<String>,
    steps: Vec<StepSummary>,
    error: Option<String>,
    #[schema(value_type = Option<Object>)]
    usage: Option<Value>,
    budget: Option<crate::model::RunBudget>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    #[schema(format = DateTime)]
    started_at: Option<String>,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
    /// What started the run; absent for runs started through `POST /v1/runs`.
    trigger: Option<crate::model::RunTrigger>,
}

/// A step of a [`RunSummary`].
#[derive(ToSchema)]
pub struct StepSummary {
    step_id: String,
    name: String,
    action: String,
    status: StepStatus,
    error: Option<String>,
    http_code: Option<u16>,
    #[schema(format = DateTime)]
    started_at: Option<String>,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
    /// When the step began waiting for approval.
    #[schema(format = DateTime)]
    waiting_since: Option<String>,
    /// Set when the step's output was cut to the configured limit.
    output_truncated: Option<bool>,
}

/// The answer of `GET /v1/runs/counts`.
#[derive(ToSchema)]
pub struct RunCounts {
    /// Runs by status; a status without runs is left out.
    #[schema(value_type = Object)]
    counts: Value,
    total: u64,
}

/// `POST /v1/runs/{id}/retry`; every member is optional, and so is the body.
#[derive(ToSchema)]
pub struct RetryBody {
    /// The first step to run again; the first failed (or canceled) step when absent.
    from_step: Option<String>,
    /// Members set in the run's context (merged at the top level) before it runs again.
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// Run this version from now on; its steps before `from_step` must be the run's.
    #[schema(minimum = 1)]
    version: Option<u32>,
    /// Why, kept in the run's `retries`.
    reason: Option<String>,
}

/// The data of an `event: status` on a log stream: a run or step status change.
#[derive(ToSchema)]
pub struct StatusEvent {
    run_status: RunStatus,
    /// The step that changed, when a step did.
    step: Option<String>,
    step_status: Option<StepStatus>,
}

/// The data of `event: end` (the run is over) and `event: shutdown` (the server stops
/// first; resume after `last_seq`) on a log stream.
#[derive(ToSchema)]
pub struct EndEvent {
    run_status: RunStatus,
    /// The seq of the last log entry sent.
    last_seq: u64,
}

/// `POST /v1/runs/{id}/approve` and `/reject`; an empty body is allowed.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// The waiting step decided on; the first waiting step when absent.
    step: Option<String>,
    comment: Option<String>,
    /// Approve only: merged into the context, checked against `approval.input_schema`.
    #[schema(value_type = Object)]
    input: Option<Value>,
}

/// `POST /v1/runs/{id}/events/{name}`; an empty body sends `null` data.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// The step's output; checked against the `event` step's `schema` when it has one.
    #[schema(value_type = Object)]
    data: Option<Value>,
}

/// A page of a run's log.
#[derive(ToSchema)]
pub struct LogPage {
    items: Vec<LogEntry>,
    /// The `after` of the next page when this one was full (`limit` entries, or 4 MiB of
    /// them); `null` at the end.
    next_after: Option<u64>,
}

/// The answer of `POST /v1/runs/{id}/logs`.
#[derive(ToSchema)]
pub struct Appended {
    /// The `seq` of each entry written, in order.
    seqs: Vec<u64>,
    /// Lines cut at `logs.max_line_bytes`.
    truncated: u64,
}

/// The answer of `/health` and `/ready`.
#[derive(ToSchema)]
pub struct Status {
    /// `ok` (health) or `ready`.
    status: String,
}

/// The answer of `/v1/whoami`.
#[derive(ToSchema)]
pub struct Identity {
    /// The token's name (`anonymous` with auth off).
    name: String,
    /// `admin`, `reader` or `worker`.
    role: String,
}

/// The answer of `/v1/server`.
#[derive(ToSchema)]
pub struct ServerStatus {
    /// `server.id`: this server's identity in the store, the holder of its leases.
    id: String,
    /// The server's version.
    version: String,
    /// `sqlite` (the embedded store) or `postgres`.
    store: String,
    /// What `/ready` would answer: the store answers and takes writes.
    ready: bool,
    /// Why it is not ready (only then), as `/ready`'s `detail` says it.
    reason: Option<String>,
    /// `engine.lease_ttl` in milliseconds.
    lease_ttl_ms: u64,
    retention: RetentionStatus,
    /// The configured hook targets, as this server sees them.
    hooks: Vec<HookStatus>,
}

/// One hook target on this server.
#[derive(ToSchema)]
pub struct HookStatus {
    /// `memarch` or `audit_log`.
    target: String,
    /// This server holds the target's delivery lease (among replicas, one does).
    delivering: bool,
    /// Events this server delivered since it started.
    delivered: u64,
    /// The outbox position acknowledged up to, as this server last saw it.
    cursor: u64,
}

/// Retention as configured, and what it deleted since this server started.
#[derive(ToSchema)]
pub struct RetentionStatus {
    /// `retention.runs` in milliseconds; `null`: finished runs are kept.
    runs_ms: Option<u64>,
    /// `retention.hook_events` in milliseconds; `null`: hook events are kept.
    hook_events_ms: Option<u64>,
    /// `retention.interval` in milliseconds.
    interval_ms: u64,
    deleted: RetentionDeleted,
}

/// Deleted by retention on this server since it started.
#[derive(ToSchema)]
pub struct RetentionDeleted {
    runs: u64,
    hook_events: u64,
}
