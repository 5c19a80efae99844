//! Integration tests: the real server on a free port, a fresh store per test, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod health;
mod helpers;
#[path = "../common/pg.rs"]
mod pg;
mod replicas;
mod workflows;
