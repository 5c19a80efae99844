//! Workflow definitions: parsing, validation and the typed model the engine runs.
//!
//! Validation runs in a fixed order and stops at the first stage that finds problems:
//! syntax (JSON or YAML) → JSON Schema → semantic checks. Every problem is a [`Violation`]
//! carrying the JSON pointer of the offending member. A definition that passes becomes a
//! [`Workflow`], which cannot be invalid: names are unique, actions exist, the step graph
//! is acyclic and every template compiles and reads only what it may.

mod checks;
pub mod dag;
mod policies;
mod refs;
pub mod schema;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::expr::{Expr, Template};
use crate::model::{BudgetMode, Decision};
use crate::problems::Violation;

pub use dag::Dag;
pub use schema::WorkflowSchema;

/// The validation stage that rejected a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Syntax,
    Schema,
    Semantic,
}

/// A rejected definition: every violation found at `stage`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.summary())]
pub struct Invalid {
    pub stage: Stage,
    pub violations: Vec<Violation>,
}

impl Invalid {
    /// A one-line summary of the stage.
    pub fn title(&self) -> &'static str {
        match self.stage {
            Stage::Syntax => "malformed document",
            Stage::Schema => "definition does not match the workflow schema",
            Stage::Semantic => "invalid workflow definition",
        }
    }

    /// The first violation, and how many more there are.
    pub fn summary(&self) -> String {
        let Some(first) = self.violations.first() else {
            return self.title().to_owned();
        };
        let at = if first.pointer.is_empty() {
            String::new()
        } else {
            format!("{}: ", first.pointer)
        };
        match self.violations.len() {
            1 => format!("{at}{}", first.message),
            n => format!("{at}{} (and {} more problems)", first.message, n - 1),
        }
    }

    fn single(stage: Stage, pointer: &str, message: impl Into<String>) -> Self {
        Self {
            stage,
            violations: vec![Violation::new(pointer, message)],
        }
    }
}

/// Error classes `retry_on` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    Server,
    Client,
    Status(u16),
    Timeout,
    Network,
}

impl RetryClass {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "5xx" => Self::Server,
            "4xx" => Self::Client,
            "timeout" => Self::Timeout,
            "network" => Self::Network,
            code => Self::Status(code.parse().ok().filter(|c| (100..600).contains(c))?),
        })
    }
}

/// How a step is retried. `max` counts retries after the first attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max: u32,
    pub backoff_ms: u64,
    pub multiplier: f64,
    pub max_backoff_ms: u64,
    pub jitter: bool,
    /// Replaces the default classes (408, 429, 5xx, timeout, network) when set.
    pub retry_on: Option<Vec<RetryClass>>,
    pub deadline_ms: Option<u64>,
}

/// Default `retry.backoff_ms`.
pub const DEFAULT_BACKOFF_MS: u64 = 500;
/// Default `retry.max_backoff_ms`.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 60_000;

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max: 0,
            backoff_ms: DEFAULT_BACKOFF_MS,
            multiplier: 2.0,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
            jitter: false,
            retry_on: None,
            deadline_ms: None,
        }
    }
}

/// What happens to a failed step's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Fail,
    Continue,
}

/// A step's approval gate.
#[derive(Clone)]
pub struct ApprovalPolicy {
    pub timeout: Option<Duration>,
    pub on_timeout: Decision,
    pub input_schema: Option<Arc<jsonschema::Validator>>,
}

impl std::fmt::Debug for ApprovalPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalPolicy")
            .field("timeout", &self.timeout)
            .field("on_timeout", &self.on_timeout)
            .field("input_schema", &self.input_schema.is_some())
            .finish()
    }
}

/// A validated step.
pub struct Step {
    pub index: usize,
    /// `id` when given, else `name`; shown as `step_id` on runs.
    pub id: String,
    pub name: String,
    pub action_name: String,
    /// The input without its expression fields.
    pub input: Template,
    /// Input keys holding bare expressions (condition `if`), evaluated to booleans.
    pub expressions: Vec<(String, Expr)>,
    pub retry: RetryPolicy,
    pub timeout: Option<Duration>,
    pub approval: Option<ApprovalPolicy>,
    pub when: Option<Expr>,
    pub on_failure: OnFailure,
    /// Run the action once per item of this array.
    pub foreach: Option<Foreach>,
    /// Runs once its parents are finished, whatever their outcome.
    pub always_run: bool,
    /// A `task` step's lease on a worker's claim (`heartbeat_ms`).
    pub heartbeat: Option<Duration>,
}

/// A step's `foreach`: the expression giving the items, and how many run at once.
#[derive(Debug)]
pub struct Foreach {
    pub items: Expr,
    pub concurrency: usize,
}

/// Items of a `foreach` step running at once when it sets no `concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 10;
/// The largest `concurrency`.
pub const MAX_CONCURRENCY: usize = 1000;

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("action", &self.action_name)
            .finish_non_exhaustive()
    }
}

/// A validated workflow definition.
#[derive(Debug)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    pub timeout: Option<Duration>,
    /// The workflow's own token budget (`budget`), over the server's default.
    pub budget: Option<WorkflowBudget>,
    pub steps: Vec<Step>,
    pub dag: Dag,
    /// Some step has `always_run` (the run's end is decided differently).
    pub has_always_run: bool,
}

/// A workflow's `budget`: its tokens (the server default's when absent) and its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowBudget {
    #[serde(default)]
    pub tokens: Option<u64>,
    #[serde(default = "strict")]
    pub mode: BudgetMode,
}

fn strict() -> BudgetMode {
    BudgetMode::Strict
}

impl Workflow {
    /// The index of the step called `name`.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }
}

/// Limits enforced by semantic checks.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_steps: usize,
    pub max_retries: u32,
    /// Largest `input` of a step, in bytes of JSON.
    pub max_input_bytes: usize,
}

/// The actions a definition may name, as validation sees them: their names and the
/// checks of their input. The server's action registry is one.
pub trait Catalog: Send + Sync {
    /// True when an action called `name` exists.
    fn knows(&self, name: &str) -> bool;
    /// Every action name, for messages.
    fn names(&self) -> Vec<&'static str>;
    /// Static checks of a step's input at submission; pointers are relative to the input.
    fn check_input(&self, name: &str, input: &Map<String, Value>) -> Vec<Violation>;
    /// Input keys of action `name` that hold bare expressions rather than templates.
    fn expression_fields(&self, name: &str) -> &'static [&'static str];
    /// True when action `name` sends its input out of the server (the only place secrets
    /// may be used).
    fn sends_out(&self, name: &str) -> bool;
}

/// Validates definitions with one schema, one action catalog and one set of limits.
pub struct Validator {
    schema: WorkflowSchema,
    actions: Arc<dyn Catalog>,
    limits: Limits,
    approve_every_step: bool,
    /// Names of the secrets declared in the config.
    secrets: BTreeSet<String>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("actions", &self.actions.names())
            .finish_non_exhaustive()
    }
}

/// Fields a client may send back from a `GET` but that the server owns.
pub const READ_ONLY_FIELDS: [&str; 8] = [
    "id",
    "version",
    "created_at",
    "updated_at",
    "created_by",
    "restored_from",
    "archived_at",
    "archived_by",
];

impl Validator {
    /// `approve_every_step` is `policy.requires_approval`.
    pub fn new(
        schema: WorkflowSchema,
        actions: Arc<dyn Catalog>,
        limits: Limits,
        approve_every_step: bool,
    ) -> Self {
        Self {
            schema,
            actions,
            limits,
            approve_every_step,
            secrets: BTreeSet::new(),
        }
    }

    /// The names templates may read as `secrets.NAME`.
    pub fn with_secrets(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.secrets = names.into_iter().collect();
        self
    }

    /// Runs the schema and semantic stages on a parsed document.
    pub fn validate(&self, document: &Value) -> Result<Workflow, Invalid> {
        let violations = self.schema.check(document);
        if !violations.is_empty() {
            return Err(Invalid {
                stage: Stage::Schema,
                violations,
            });
        }
        checks::build(self, document).map_err(|violations| Invalid {
            stage: Stage::Semantic,
            violations,
        })
    }
}

/// Parses a request body or file as JSON, or as YAML when `yaml` is set.
pub fn parse_document(bytes: &[u8], yaml: bool) -> Result<Value, Invalid> {
    if yaml {
        serde_yaml::from_slice(bytes)
            .map_err(|e| Invalid::single(Stage::Syntax, "", format!("invalid YAML: {e}")))
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| Invalid::single(Stage::Syntax, "", format!("invalid JSON: {e}")))
    }
}

/// The definition to store: the document without server-owned fields.
pub fn stored_definition(document: &Value) -> Value {
    let mut out = document.clone();
    if let Value::Object(map) = &mut out {
        for field in READ_ONLY_FIELDS {
            map.shift_remove(field);
        }
    }
    out
}

/// The object at `document`, for callers that need a member before validation.
pub fn as_object(document: &Value) -> Result<&Map<String, Value>, Invalid> {
    document
        .as_object()
        .ok_or_else(|| Invalid::single(Stage::Schema, "", "a workflow must be a JSON object"))
}
