//! Integration tests: the real server on a free port, a fresh store per test, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod approvals;
mod auth;
mod cancel;
mod cli;
mod client;
mod client_decide;
mod client_follow;
mod client_options;
mod console;
mod flow;
mod health;
mod helpers;
mod hooks;
mod hostile;
mod image;
mod limits;
mod logs;
mod observability;
mod openapi;
mod outbound;
#[path = "../common/pg.rs"]
mod pg;
mod replicas;
mod restart;
mod retries;
mod runs;
mod secrets;
mod services;
mod shutdown;
mod tasks;
mod tasks_edges;
mod templates;
mod workers;
mod workflows;
