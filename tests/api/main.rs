//! Integration tests: the real server on a free port, a fresh store per test, real HTTP.

mod health;
mod helpers;
mod workflows;
