//! What both stores keep for triggers (DESIGN §10) and answer for the events feed (§11):
//! cron schedules, webhook triggers, the claim of a schedule's tick, and event filters.
//!
//! A tick is claimed by a compare-and-set on the schedule's `next_fire_at`, in the same
//! commit as the run it starts ([`ScheduleFire`] on [`super::NewRun`]): of two replicas
//! firing one tick only one commit matches, and a crash leaves either both the claim and
//! the run or neither.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::model::Timestamp;
use crate::secret::Secret;

/// What a schedule does when a tick comes while its previous run is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The tick is dropped (counted as skipped).
    #[default]
    Skip,
    /// The tick starts another run beside it.
    Allow,
    /// The previous run is canceled, then the tick starts its run.
    CancelPrevious,
}

impl Overlap {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Allow => "allow",
            Self::CancelPrevious => "cancel_previous",
        }
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no overlap policy.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown overlap policy {0:?}; expected skip, allow or cancel_previous")]
pub struct UnknownOverlap(pub String);

impl FromStr for Overlap {
    type Err = UnknownOverlap;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Self::Skip),
            "allow" => Ok(Self::Allow),
            "cancel_previous" => Ok(Self::CancelPrevious),
            other => Err(UnknownOverlap(other.to_owned())),
        }
    }
}

/// A stored cron schedule. `next_fire_at` is `None` while it is paused.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub id: String,
    pub workflow_id: String,
    pub cron: String,
    /// An IANA time zone name (`UTC`, `Europe/Berlin`).
    pub timezone: String,
    /// The context of every run it starts.
    pub context: Map<String, Value>,
    pub overlap: Overlap,
    pub paused: bool,
    /// The next tick not yet fired.
    pub next_fire_at: Option<Timestamp>,
    /// The tick that started the last run (or the time of the last `trigger`).
    pub last_fire_time: Option<Timestamp>,
    pub last_run_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub created_by: Option<String>,
}

/// A new definition of an existing schedule (`PUT`, pause, resume). What it fired last is
/// kept.
#[derive(Debug, Clone)]
pub struct ScheduleUpdate {
    pub id: String,
    pub workflow_id: String,
    pub cron: String,
    pub timezone: String,
    pub context: Map<String, Value>,
    pub overlap: Overlap,
    pub paused: bool,
    pub next_fire_at: Option<Timestamp>,
}

/// The schedule tick a new run is started for, recorded in the run's own commit.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleFire {
    pub schedule_id: String,
    /// The tick claimed: the commit happens only while `next_fire_at` still equals it, and
    /// moves it to `next`. `None` (a manual `trigger`) claims nothing.
    pub claim: Option<(Timestamp, Option<Timestamp>)>,
    pub fire_time: Timestamp,
}

/// How a webhook trigger authenticates its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub enum SecretHeader {
    /// GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`.
    #[default]
    #[serde(rename = "X-Hub-Signature-256")]
    HubSignature,
    /// GitLab's `X-Gitlab-Token: <the secret itself>`: no signature over the body.
    #[serde(rename = "X-Gitlab-Token")]
    GitlabToken,
}

impl SecretHeader {
    /// The header's name as configured and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HubSignature => "X-Hub-Signature-256",
            Self::GitlabToken => "X-Gitlab-Token",
        }
    }
}

impl FromStr for SecretHeader {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("x-hub-signature-256") {
            Ok(Self::HubSignature)
        } else if s.eq_ignore_ascii_case("x-gitlab-token") {
            Ok(Self::GitlabToken)
        } else {
            Err(format!(
                "unknown secret_header {s:?}; expected X-Hub-Signature-256 or X-Gitlab-Token"
            ))
        }
    }
}

/// A stored webhook trigger: deliveries to `POST /hooks/{name}` start runs of `workflow_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookTrigger {
    pub name: String,
    pub workflow_id: String,
    /// Without one, callers need an admin token.
    pub secret: Option<Secret>,
    pub secret_header: SecretHeader,
    /// An object of templates over `request` that becomes the run's context.
    pub context: Option<Value>,
    /// An expression over `request`; false answers without starting a run.
    pub filter: Option<String>,
    pub created_at: Timestamp,
    pub created_by: Option<String>,
}

/// Which events `GET /v1/events` answers, and in which order; every set filter must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub run_id: Option<String>,
    pub workflow_id: Option<String>,
    /// Any of these types (`run.started`, `step.succeeded`, …); empty: every type.
    pub types: Vec<String>,
    /// Only events before this outbox position.
    pub before: Option<u64>,
    /// Newest first: a page is the `limit` events nearest below `before` (or the head).
    pub newest_first: bool,
}

impl EventFilter {
    /// True when the filter lets every event through.
    pub fn is_empty(&self) -> bool {
        self.run_id.is_none()
            && self.workflow_id.is_none()
            && self.types.is_empty()
            && self.before.is_none()
    }

    /// True when `event` passes the filter.
    pub fn matches(&self, event: &super::StoredEvent) -> bool {
        self.run_id.as_ref().is_none_or(|r| *r == event.run_id)
            && self
                .workflow_id
                .as_ref()
                .is_none_or(|w| *w == event.workflow_id)
            && (self.types.is_empty() || self.types.contains(&event.event.kind))
            && self.before.is_none_or(|b| event.id < b)
    }
}
