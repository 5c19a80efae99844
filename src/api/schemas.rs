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

use crate::model::{LogEntry, Run};

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
    /// The run's initial context.
    #[schema(value_type = Object)]
    context: Option<Value>,
}

/// A page of runs, newest first.
#[derive(ToSchema)]
pub struct RunList {
    items: Vec<Run>,
    next_cursor: Option<String>,
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
    /// The `after` of the next page when this one was full; `null` at the end.
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
