//! `orchestrator`: a declarative workflow runtime.
//!
//! # Layout
//! Modules sit on floors and import only from lower ones (`tests/layout.rs` checks it):
//!
//! - Ground floor, plain data and pure helpers: [`model`] (runs, steps, logs as stored
//!   and served), [`ids`] (prefixed ULIDs), [`problems`] (a violation at a JSON pointer),
//!   [`secret`] (values that never print), [`size`] (JSON sizes and the truncation
//!   marker), [`probe`] (the HTTP probe of `orchestrator health`), [`clock`] (wall time, manual in tests), [`expr`] (the one expression
//!   language, minijinja), [`metrics`] (the Prometheus registry every part records into).
//! - [`outbound`]: the one HTTP client, its SSRF policy, failure classes, the one backoff
//!   schedule. [`sandbox`]: the child processes heavy templates render in. [`definition`]: the workflow model, JSON Schema and semantic checks, the
//!   step DAG. [`store`]: the [`store::Store`] trait, SQLite and PostgreSQL; the only
//!   place that knows SQL.
//! - [`config`]: `config.yaml` + environment → raw shapes → a checked [`config::Config`]
//!   of typed sections.
//! - [`actions`]: one file per action behind [`actions::Action`], and the registry.
//!   [`hooks`]: delivery of run and step events from the outbox. [`logs`]: live fan-out
//!   of committed log entries. [`templates`]: the template pack. [`telemetry`]: tracing.
//! - [`engine`]: the run state machine: scheduling, retry, approvals, cancel, resume.
//! - [`api`]: the HTTP resources; the only place that knows actix-web.
//! - [`app`]: wires everything together; `main` and the tests start the server through it.
//! - [`cli`]: the command line (serve, validate, migrate, health, and the client's subcommands).
//! - [`client`]: the command-line client (`apply`, `run`, `logs -f`, …). It sits on the
//!   first floor: it speaks HTTP to a server and shares nothing with it but plain data
//!   ([`model`] statuses).
//!
//! Data flows one way: api → engine → actions / store. The engine never sees HTTP
//! handlers, and nothing but the store touches the database.

pub mod actions;
pub mod api;
pub mod app;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod definition;
pub mod engine;
pub mod expr;
pub mod hooks;
pub mod ids;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod outbound;
pub mod probe;
pub mod problems;
pub mod sandbox;
pub mod secret;
pub mod size;
pub mod store;
pub mod telemetry;
pub mod templates;
