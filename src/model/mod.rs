//! Records shared by the store, the engine and the API: workflow versions, runs, step runs,
//! attempts, approvals and log entries.
//!
//! These are plain data. The store persists them, the engine changes them only through
//! committed [`crate::store::Transition`]s, and the API serialises them as they are, so the
//! JSON shape here is the wire shape (Go-compatible fields first, extensions after).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

pub mod rfc3339;
mod served;

pub use served::ServedRun;

/// Wall-clock time as stored and served (RFC 3339, UTC).
pub type Timestamp = DateTime<Utc>;

/// The current time, truncated to milliseconds so that what is stored reads back equal.
pub fn now() -> Timestamp {
    // Milliseconds straight from the system clock: `Utc::now()` builds a date and time
    // that truncating would take apart and build again (a step reads the clock ~13 times).
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    DateTime::from_timestamp_millis(since_epoch.as_millis() as i64).unwrap_or_default()
}

macro_rules! closed_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        /// The wire names, for the OpenAPI document (derive cannot see macro renames).
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl ToSchema for $name {}

        impl $name {
            /// The upper-case wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownVariant { kind: stringify!($name), value: s.to_owned() }),
                }
            }
        }
    };
}

/// A string that names no variant of a closed enum.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownVariant {
    kind: &'static str,
    value: String,
}

closed_enum! {
    /// Where a run is in its life. `SUCCEEDED`, `FAILED` and `CANCELED` are terminal.
    RunStatus {
        Pending = "PENDING",
        Running = "RUNNING",
        WaitingApproval = "WAITING_APPROVAL",
        Waiting = "WAITING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
        Canceled = "CANCELED",
    }
}

closed_enum! {
    /// Where a step of a run is. Finished steps (`SUCCEEDED`, `FAILED`, `SKIPPED`,
    /// `CANCELED`) never change again, except by an explicit run retry.
    StepStatus {
        Pending = "PENDING",
        Running = "RUNNING",
        WaitingApproval = "WAITING_APPROVAL",
        Waiting = "WAITING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
        Skipped = "SKIPPED",
        Canceled = "CANCELED",
    }
}

closed_enum! {
    /// Severity of a run log entry.
    LogLevel { Debug = "debug", Info = "info", Warn = "warn", Error = "error" }
}

closed_enum! {
    /// Who wrote a run log entry: the engine itself or a client through the API.
    LogSource { Engine = "engine", Client = "client" }
}

closed_enum! {
    /// An approval decision.
    Decision { Approved = "approved", Rejected = "rejected" }
}

impl RunStatus {
    /// True once the run can no longer change (except by an explicit retry).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }

    /// True while the run is parked: it holds no task until something wakes it.
    pub fn is_parked(self) -> bool {
        matches!(self, Self::WaitingApproval | Self::Waiting)
    }
}

impl StepStatus {
    /// True once the step has reached an outcome.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Skipped | Self::Canceled
        )
    }
}

/// One stored version of a workflow. Versions are append-only; `definition` is the
/// validated definition as submitted (without read-only fields such as `version`).
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowVersion {
    pub id: String,
    pub name: String,
    pub version: u32,
    pub definition: Value,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub created_at: Timestamp,
    pub created_by: Option<String>,
    /// The version this one restored, when it was made by a rollback.
    pub restored_from: Option<u32>,
}

/// A stored template of the template pack or of `POST /v1/templates`.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateRecord {
    pub name: String,
    pub body: Value,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub created_at: Timestamp,
    pub created_by: Option<String>,
}

/// One attempt at running a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "rfc3339")]
    pub started_at: Timestamp,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_code: Option<u16>,
    /// The delay chosen before the next attempt, when this one is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// The state of one step within a run (Go-compatible fields first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepRun {
    pub step_id: String,
    pub name: String,
    pub action: String,
    pub status: StepStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_code: Option<u16>,
    pub attempts: Vec<Attempt>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    /// When the step began waiting for approval (its approval timeout counts from here).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub waiting_since: Option<Timestamp>,
    /// Set when the output was larger than the configured limit and was cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    /// How many times in a row the server stopped without warning while this step was in
    /// flight (engine bookkeeping for the poison-run quarantine; not served).
    #[serde(skip)]
    pub interruptions: u32,
    /// What a `WAITING` step waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// The items of a `foreach` step, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<Item>>,
    /// What a running `foreach` step iterates over, as evaluated when it started (kept so
    /// that a resumed step goes on over the same items).
    #[serde(skip)]
    #[schema(ignore)]
    pub over: Option<Arc<Vec<Value>>>,
}

/// What a `WAITING` step waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "for", rename_all = "snake_case")]
pub enum Waiting {
    /// A durable timer (`wait`).
    Timer {
        #[schema(value_type = String, format = DateTime)]
        #[serde(with = "rfc3339")]
        until: Timestamp,
    },
    /// `POST /v1/runs/{id}/events/{name}` (`event`), until `until` when it has a timeout.
    Event {
        name: String,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "rfc3339::option"
        )]
        #[schema(value_type = Option<String>, format = DateTime)]
        until: Option<Timestamp>,
    },
    /// A child run to end (`workflow`).
    Child { run_id: String },
    /// A worker to end claim `attempt` of task `task_id`, on `queue` (`task`).
    Task {
        task_id: String,
        queue: String,
        attempt: u32,
    },
}

/// One item of a `foreach` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Item {
    pub index: usize,
    pub status: StepStatus,
    /// Attempts made so far.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The parts of a step kept beside its columns (one JSON column in the stores).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<Item>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over: Option<Arc<Vec<Value>>>,
}

impl StepExtra {
    /// A step's extra parts, or `None` when it has none.
    pub fn of(step: &StepRun) -> Option<Self> {
        (step.waiting.is_some() || step.items.is_some()).then(|| Self {
            waiting: step.waiting.clone(),
            items: step.items.clone(),
            over: step.over.clone(),
        })
    }

    /// Puts these parts back on the step read from a row.
    pub fn apply(self, step: &mut StepRun) {
        step.waiting = self.waiting;
        step.items = self.items;
        step.over = self.over;
    }
}

impl StepRun {
    /// A step that has not started.
    pub fn pending(step_id: String, name: String, action: String) -> Self {
        Self {
            step_id,
            name,
            action,
            status: StepStatus::Pending,
            error: None,
            output: None,
            http_code: None,
            attempts: Vec::new(),
            started_at: None,
            finished_at: None,
            waiting_since: None,
            output_truncated: false,
            interruptions: 0,
            waiting: None,
            items: None,
            over: None,
        }
    }
}

/// A recorded approval decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    pub step: String,
    pub decision: Decision,
    pub by: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "rfc3339")]
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

/// A run as stored and served.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Run {
    pub id: String,
    pub workflow_id: String,
    pub workflow_version: u32,
    pub status: RunStatus,
    pub current_step: usize,
    /// The run whose `workflow` step started this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
    pub steps: Vec<StepRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub approvals: Vec<Approval>,
    /// Token usage summed over the run's LLM calls.
    #[serde(skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub usage: Map<String, Value>,
    /// The token budget `ai_router.chat` steps are held to (from the workflow's `budget`,
    /// or `limits.run_tokens`), compared with `usage.total_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<RunBudget>,
    /// Every re-run of this run, oldest first, with the steps as they were before it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<RetryRecord>,
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "rfc3339::serialize")]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "rfc3339::serialize")]
    pub updated_at: Timestamp,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option::serialize"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::option::serialize"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    /// What started the run; absent for runs started through `POST /v1/runs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<RunTrigger>,
    /// Engine bookkeeping kept with the run but not served.
    #[serde(skip)]
    pub control: RunControl,
}

/// What started a run other than `POST /v1/runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RunTrigger {
    /// The tick of schedule `id` that was due at `fire_time` (or `POST …/trigger`'s time).
    Schedule {
        id: String,
        #[schema(value_type = String, format = DateTime)]
        #[serde(with = "rfc3339")]
        fire_time: Timestamp,
    },
    /// A delivery to `POST /hooks/{name}`, with its delivery id when it had one, and the
    /// request as received (size-limited) for debugging what the context was rendered from.
    Webhook {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivery: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<Object>)]
        request: Option<Value>,
    },
}

/// Engine bookkeeping stored with a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunControl {
    /// Increases with every committed change; guards compare it (see `store::Guard`).
    pub rev: u64,
    /// Milliseconds the run has spent executing (not parked); counts against `timeout_ms`.
    pub active_ms: u64,
    /// When a parked run must be woken: its earliest approval timeout, timer, event
    /// timeout, or check of a child run.
    pub wake_at: Option<Timestamp>,
    /// What else is kept with the run (one JSON column in the stores).
    pub extra: RunExtra,
    /// The run's last owner left it deliberately (a graceful shutdown): steps it had in
    /// flight were cut off, not struck down by a crash.
    pub left_cleanly: bool,
}

/// The parts of a run's bookkeeping kept in one JSON column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunExtra {
    /// How deep in a chain of child runs this run is (0: started directly).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
    /// Events that arrived before a step waited for them, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<KeptEvent>,
}

impl RunExtra {
    /// True when there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An event that arrived before a step waited for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptEvent {
    pub name: String,
    pub data: Value,
    #[serde(with = "rfc3339")]
    pub at: Timestamp,
    pub by: String,
}

/// A run status change, carried by the log entry that announces it so that a log reader
/// (and the SSE stream) sees every change in commit order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub run_status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_status: Option<StepStatus>,
}

/// A committed log entry of a run; `seq` increases by one per entry within a run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LogEntry {
    pub seq: u64,
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "rfc3339::serialize")]
    pub ts: Timestamp,
    pub level: LogLevel,
    pub source: LogSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub message: String,
    #[serde(skip)]
    pub status: Option<StatusChange>,
}

/// Text a store can keep: PostgreSQL's `text` holds no NUL character, so both stores keep
/// U+FFFD in its place. For text the engine records from outside (downstream answers,
/// webhook deliveries, a client's log lines); JSON request bodies holding NUL are refused.
pub fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// [`without_nul`] for every string and key under `value`.
pub fn scrub_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = without_nul(std::mem::take(s)),
        Value::Array(items) => items.iter_mut().for_each(scrub_nul),
        Value::Object(map) => scrub_nul_map(map),
        _ => {}
    }
}

/// [`scrub_nul`] for an object's keys and values.
pub fn scrub_nul_map(map: &mut Map<String, Value>) {
    if map.keys().any(|k| k.contains('\0')) {
        let old = std::mem::take(map);
        for (k, mut v) in old {
            scrub_nul(&mut v);
            map.insert(without_nul(k), v);
        }
    } else {
        map.values_mut().for_each(scrub_nul);
    }
}

/// A log entry before the store has given it a `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLogEntry {
    pub ts: Timestamp,
    pub level: LogLevel,
    pub source: LogSource,
    pub step: Option<String>,
    pub message: String,
    pub status: Option<StatusChange>,
}

impl NewLogEntry {
    /// An engine entry about the run or one of its steps.
    pub fn engine(level: LogLevel, step: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            ts: now(),
            level,
            source: LogSource::Engine,
            step: step.map(str::to_owned),
            message: without_nul(message.into()),
            status: None,
        }
    }

    /// A line a client posted to the run's log.
    pub fn client(level: LogLevel, message: impl Into<String>) -> Self {
        Self {
            ts: now(),
            level,
            source: LogSource::Client,
            step: None,
            message: without_nul(message.into()),
            status: None,
        }
    }

    /// Marks this entry as announcing a status change.
    pub fn with_status(mut self, status: StatusChange) -> Self {
        self.status = Some(status);
        self
    }

    /// Gives the entry its sequence number once the store has assigned it.
    pub fn into_entry(self, seq: u64) -> LogEntry {
        LogEntry {
            seq,
            ts: self.ts,
            level: self.level,
            source: self.source,
            step: self.step,
            message: self.message,
            status: self.status,
        }
    }
}

/// A run or step event for the hook outbox, before the store has given it its per-run `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub status: String,
    #[serde(with = "rfc3339")]
    pub ts: Timestamp,
}

/// A page request: at most `limit` items after the opaque `cursor`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Option<String>,
}

/// One page of a list, newest first; `next_cursor` is set when more items follow.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/runs`; every filter that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow_id: Option<String>,
    /// Any of these statuses (none: any status).
    pub statuses: Vec<RunStatus>,
    pub workflow_version: Option<u32>,
    /// Created at or after this time.
    pub created_after: Option<Timestamp>,
    /// Created before this time.
    pub created_before: Option<Timestamp>,
    /// The type of what started the run (`schedule`, `webhook`), or `api` for runs started
    /// through `POST /v1/runs` (no trigger).
    pub trigger: Option<String>,
    /// Context members equal to these values: each is a path of object keys and the
    /// values it may hold (a string, or a number, boolean or null written as JSON).
    pub context: Vec<ContextMatch>,
    /// Leave out what light lists do not need (context, step outputs, re-run history).
    pub summary: bool,
}

/// One `context.KEY=VALUE` filter of run search.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextMatch {
    /// Object keys from the top of the context (`a.b` → `["a", "b"]`).
    pub path: Vec<String>,
    /// The JSON values that match: the text as a string, and as a scalar when it is one.
    pub values: Vec<Value>,
}

impl ContextMatch {
    /// The filter `context.<path>=<text>`.
    pub fn parse(path: &str, text: &str) -> Self {
        let mut values = vec![Value::String(text.to_owned())];
        if let Ok(scalar @ (Value::Number(_) | Value::Bool(_) | Value::Null)) =
            serde_json::from_str::<Value>(text)
        {
            values.push(scalar);
        }
        Self {
            path: path.split('.').map(str::to_owned).collect(),
            values,
        }
    }

    /// The values as nested objects along the path (`{"a": {"b": v}}`), for containment.
    pub fn as_documents(&self) -> Vec<Value> {
        self.values
            .iter()
            .map(|v| {
                self.path.iter().rev().fold(v.clone(), |inner, key| {
                    let mut map = Map::new();
                    map.insert(key.clone(), inner);
                    Value::Object(map)
                })
            })
            .collect()
    }
}

closed_enum! {
    /// What happens when a run's token budget is spent: `strict` fails the next
    /// `ai_router.chat` step, `warn` logs a warning once, `off` holds no budget.
    BudgetMode { Strict = "strict", Warn = "warn", Off = "off" }
}

/// The token budget of a run, fixed when it starts (and when a re-run changes version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunBudget {
    /// Tokens (`usage.total_tokens`) the run's `ai_router.chat` steps may use.
    pub tokens: u64,
    pub mode: BudgetMode,
}

/// One re-run of a run (`POST /v1/runs/{id}/retry`): who asked, from where, with what
/// changes, and the run as it was before: its status and error, and each step that was
/// reset with every attempt it had made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetryRecord {
    /// 1 for the first re-run.
    pub n: u32,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "rfc3339")]
    pub at: Timestamp,
    pub by: String,
    /// The first step run again.
    pub from_step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The workflow version before the re-run.
    pub from_version: u32,
    /// The version the re-run runs (the same unless `version` was given).
    pub version: u32,
    /// The context members the re-run set (merged into the context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
    /// The run as it ended before the re-run: status, error, when it had started and
    /// finished (the run's `started_at` becomes the re-run's start).
    pub previous_status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_error: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_started_at: Option<Timestamp>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_finished_at: Option<Timestamp>,
    /// The steps reset, as they were (with their attempts, outputs and errors).
    pub steps: Vec<StepRun>,
    /// What was left out to keep the record under `limits.max_output_bytes`: `outputs`
    /// (the steps' outputs), then `items` (foreach items), then `context` (the members set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trimmed: Vec<String>,
}

/// Counts of a store's writes since it opened; each only ever grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed (group commits: each holds one or more writes).
    pub commits: u64,
    /// Writes committed in them (a run's transition, a log append, a claim, …).
    pub writes: u64,
    /// Database pages appended to the write-ahead log: the embedded store's write volume,
    /// which its checkpoints copy again into the database file.
    pub wal_pages: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_the_system_clock_to_the_millisecond() {
        let before = Utc::now();
        let at = now();
        let after = Utc::now();
        assert_eq!(at.timestamp_subsec_nanos() % 1_000_000, 0);
        assert!(
            at.timestamp_millis() >= before.timestamp_millis(),
            "{before} {at}"
        );
        assert!(at <= after, "{at} {after}");
    }

    #[test]
    fn nul_characters_become_replacement_characters_in_strings_and_keys() {
        let mut v = serde_json::json!({"a\u{0}": ["x\u{0}y", 1], "b": {"c": "\u{0}"}});
        scrub_nul(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a\u{FFFD}": ["x\u{FFFD}y", 1], "b": {"c": "\u{FFFD}"}})
        );
        assert_eq!(without_nul("plain".into()), "plain");
    }

    #[test]
    fn statuses_round_trip_through_their_wire_names() {
        for s in [
            "PENDING",
            "RUNNING",
            "WAITING_APPROVAL",
            "WAITING",
            "SUCCEEDED",
            "FAILED",
            "CANCELED",
        ] {
            assert_eq!(s.parse::<RunStatus>().unwrap().to_string(), s);
        }
        assert_eq!(
            "SKIPPED".parse::<StepStatus>().unwrap(),
            StepStatus::Skipped
        );
        assert!("running".parse::<RunStatus>().is_err());
    }

    #[test]
    fn only_succeeded_failed_and_canceled_runs_are_terminal() {
        assert!(RunStatus::Canceled.is_terminal());
        assert!(!RunStatus::WaitingApproval.is_terminal());
    }
}
