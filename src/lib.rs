//! `orchestrator`: a declarative workflow runtime.
//!
//! # Layout
//! - [`config`]: `config.yaml` + environment → a validated [`config::Config`].
//! - [`definition`]: the workflow model, JSON Schema and semantic validation, the step DAG.
//! - [`templates`]: the template pack and instantiation of templates into workflows.
//! - [`expr`]: the one expression language (minijinja) for `{{ }}`, `when` and `if`.
//! - [`model`]: records shared by the store, the engine and the API (runs, steps, logs).
//! - [`store`]: the [`store::Store`] trait and its implementations; the only place that knows SQL.
//! - [`actions`]: one file per action behind [`actions::Action`], plus the registry, the
//!   one outbound HTTP client and its policy ([`actions::policy`]), and output sizes.
//! - [`engine`]: the run state machine: scheduling, retry, approvals, cancel, resume.
//! - [`logs`]: live fan-out of committed log entries to subscribers.
//! - [`hooks`]: delivery of run and step events from the store's outbox to hook targets.
//! - [`metrics`]: the Prometheus metrics every part records into, served by `GET /metrics`.
//! - [`api`]: the HTTP resources; the only place that knows actix-web.
//! - [`app`]: wires everything together; `main` and the tests start the server through it.
//! - [`probe`]: `orchestrator health`, the container health check.
//!
//! Data flows one way: api → engine → actions / store. The engine never sees HTTP handlers,
//! and nothing but the store touches the database.

pub mod actions;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod definition;
pub mod engine;
pub mod expr;
pub mod hooks;
pub mod ids;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod store;
pub mod telemetry;
pub mod templates;
