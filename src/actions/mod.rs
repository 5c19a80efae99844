//! Actions: what a step does. One file per action behind the [`Action`] trait, and the
//! [`Registry`] that names them.
//!
//! Actions are stateless and know nothing of runs beyond the [`Call`] they are given: the
//! engine renders the input, applies the per-attempt timeout, aborts on cancel (by dropping
//! the future, which closes any connection), and decides about retries from the
//! [`Failure`] an action reports. Network actions call out through the one client of
//! [`crate::outbound`]. Adding an action touches its file and [`Registry::new`].

mod ai_router;
mod condition;
pub mod event;
mod http;
mod memarch;
mod scm;
mod service;
pub mod task;
mod transform;
mod wait;
mod web;
mod workflow;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::config::Services;
use crate::definition::Catalog;
use crate::model::Timestamp;
use crate::outbound::{HttpClient, Response};
use crate::problems::Violation;

pub use crate::outbound::{Failure, FailureKind};
pub use http::is_template;

/// What a step is asked to do, with its input already rendered.
#[derive(Debug, Clone)]
pub struct Call {
    pub input: Value,
    pub run_id: String,
    pub step: String,
    /// `<run id>/<step name>`: the same for every attempt, so downstreams can de-duplicate.
    pub idempotency_key: String,
    /// The run's context when the step started (read-only).
    pub context: Arc<Map<String, Value>>,
}

/// A successful step result.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub output: Value,
    pub http_code: Option<u16>,
    pub effect: Effect,
    /// Token usage to add to the run's totals.
    pub usage: Option<Map<String, Value>>,
}

impl Outcome {
    /// An outcome that only produces output.
    pub fn output(output: Value) -> Self {
        Self {
            output,
            http_code: None,
            effect: Effect::None,
            usage: None,
        }
    }
}

impl From<Response> for Outcome {
    /// A 2xx answer: `{status, headers, body}` as output.
    fn from(response: Response) -> Self {
        Self {
            output: response.output,
            http_code: Some(response.status),
            effect: Effect::None,
            usage: None,
        }
    }
}

/// What a successful step does to its run besides producing output.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    /// Merge these keys into the run context.
    MergeContext(Map<String, Value>),
    /// End the run now as `SUCCEEDED`; steps not reached are `SKIPPED`.
    StopRun,
    /// The step waits (`WAITING`) for something outside it; the engine finishes it.
    Park(Parking),
}

/// What a parking step waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Parking {
    /// A time (`wait`).
    Timer { until: Timestamp },
    /// An event sent to the run (`event`), failing the step after `timeout`.
    Event {
        name: String,
        timeout: Option<Duration>,
    },
    /// A child run of another workflow (`workflow`), started by the engine.
    Child {
        workflow_id: String,
        version: Option<u32>,
        context: Map<String, Value>,
    },
    /// A worker process, through a task put on `queue` (`task`).
    Task { queue: String, payload: Value },
}

/// A violation for each member of `input` not in `known`.
pub fn unknown_fields(input: &Map<String, Value>, known: &[&str]) -> Vec<Violation> {
    input
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| {
            Violation::new(
                format!("/{}", crate::expr::escape_pointer(k)),
                format!("unknown field {k:?}; expected {}", known.join(", ")),
            )
        })
        .collect()
}

/// One kind of step.
#[async_trait]
pub trait Action: Send + Sync + 'static {
    /// Static checks of a step's input at submission; pointers are relative to the input.
    /// Templated strings are not rendered yet and should be let through.
    fn check(&self, _input: &Map<String, Value>) -> Vec<Violation> {
        Vec::new()
    }

    /// Input keys that hold bare expressions rather than templates. The engine evaluates
    /// them as conditions and passes the boolean results in their place.
    fn expression_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// The per-attempt timeout when the step sets none; `None` for local actions.
    fn default_timeout(&self) -> Option<Duration> {
        None
    }

    /// True when the action sends its input out of the server (a network call): the only
    /// inputs that may use secrets.
    fn sends_out(&self) -> bool {
        self.default_timeout().is_some()
    }

    /// Performs one attempt.
    async fn execute(&self, call: Call) -> Result<Outcome, Failure>;
}

/// The actions this server knows, by name.
#[derive(Clone)]
pub struct Registry {
    actions: BTreeMap<&'static str, Arc<dyn Action>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.actions.keys()).finish()
    }
}

/// The per-attempt timeout of `http` steps that set none.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

impl Registry {
    /// Every action, sharing one pooled HTTP client. Service actions take their base URL,
    /// timeout and headers from their `config.yaml` section; whether a section is configured
    /// decides whether a step without `endpoint` passes the submission check.
    pub fn new(services: &Services, client: HttpClient) -> Self {
        let service = |key, section| service::Service::new(key, section, client.clone());
        let ai_router = service("ai_router", &services.ai_router);
        let web = service("web", &services.web);
        let memarch = service("memarch", &services.memarch);
        let scm = service("scm", &services.scm);
        let actions: [(&'static str, Arc<dyn Action>); 13] = [
            (
                "http",
                Arc::new(http::Http::new(client.clone(), DEFAULT_HTTP_TIMEOUT)),
            ),
            ("transform", Arc::new(transform::Transform)),
            ("condition", Arc::new(condition::Condition)),
            ("ai_router.chat", Arc::new(ai_router::Chat::new(ai_router))),
            ("web.search", Arc::new(web::Search::new(web.clone()))),
            ("web.extract", Arc::new(web::Extract::new(web))),
            (
                "memarch.store_fact",
                Arc::new(memarch::StoreFact::new(memarch.clone())),
            ),
            ("memarch.search", Arc::new(memarch::Search::new(memarch))),
            ("scm.call", Arc::new(scm::ScmCall::new(scm))),
            ("wait", Arc::new(wait::Wait)),
            ("event", Arc::new(event::Event)),
            ("workflow", Arc::new(workflow::Workflow)),
            ("task", Arc::new(task::Task)),
        ];
        Self {
            actions: actions.into_iter().collect(),
        }
    }

    /// The action called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Action>> {
        self.actions.get(name).cloned()
    }

    /// The names of every action, in order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.actions.keys().copied()
    }

    /// The action called `name`, or one that fails every attempt saying it is unknown
    /// (validated definitions name only known actions, so this is a safety net).
    pub fn get_or_unknown(&self, name: &str) -> Arc<dyn Action> {
        self.get(name)
            .unwrap_or_else(|| Arc::new(Unknown(name.to_owned())))
    }
}

/// Stands in for an action this server does not have.
struct Unknown(String);

#[async_trait]
impl Action for Unknown {
    async fn execute(&self, _call: Call) -> Result<Outcome, Failure> {
        Err(Failure::rejected(format!(
            "unknown action {:?} on this server",
            self.0
        )))
    }
}

impl Catalog for Registry {
    fn knows(&self, name: &str) -> bool {
        self.actions.contains_key(name)
    }

    fn names(&self) -> Vec<&'static str> {
        self.actions.keys().copied().collect()
    }

    fn check_input(&self, name: &str, input: &Map<String, Value>) -> Vec<Violation> {
        self.actions
            .get(name)
            .map(|a| a.check(input))
            .unwrap_or_default()
    }

    fn expression_fields(&self, name: &str) -> &'static [&'static str] {
        self.actions
            .get(name)
            .map(|a| a.expression_fields())
            .unwrap_or_default()
    }

    fn sends_out(&self, name: &str) -> bool {
        self.actions.get(name).is_some_and(|a| a.sends_out())
    }
}
