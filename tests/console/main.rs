//! The web console in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver) against the real server on a free port. Each test also asserts
//! that the page recorded no JavaScript error, and saves a screenshot of the pages it saw
//! under `target/console-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod curation;
mod flow;
#[path = "../api/helpers.rs"]
mod helpers;
mod queues;
mod runs;
mod server;
mod triggers;
mod workflows;

use orchestrator::config::RawToken;
use serde_json::{Value, json};

use helpers::{TestApp, spawn_app_with};

pub const ADMIN: &str = "admin-token-0123456789";
pub const READER: &str = "reader-token-0123456789";

/// A server with an `ops` admin token and a `grafana` reader token; its client sends the
/// admin token.
pub async fn secured() -> TestApp {
    let mut app = spawn_app_with(|raw| {
        raw.auth.tokens = vec![
            RawToken {
                name: "ops".into(),
                token: ADMIN.into(),
                role: "admin".into(),
            },
            RawToken {
                name: "grafana".into(),
                token: READER.into(),
                role: "reader".into(),
            },
        ];
    })
    .await;
    app.client = TestApp::client_with_token(ADMIN);
    app
}

/// A fan-out/fan-in workflow: `start`, then `b` (succeeds), `c` (fails, and the run goes
/// on), `d` (skipped), then `join`, which waits for an approval whose input has a schema.
pub fn fan_out() -> Value {
    json!({
        "id": "fan",
        "name": "fan-out",
        "description": "three branches and a gated join",
        "steps": [
            {"name": "start", "action": "transform", "input": {"set": {"started": true}}},
            {"name": "b", "action": "transform", "depends_on": ["start"],
             "input": {"value": "{{ context.who }}"}},
            {"name": "c", "action": "condition", "depends_on": ["start"], "on_failure": "continue",
             "input": {"if": "false", "on_false": "fail"}},
            {"name": "d", "action": "transform", "depends_on": ["start"], "when": "false",
             "input": {"value": 1}},
            {"name": "join", "action": "transform", "depends_on": ["b", "c", "d"],
             "approval": {"input_schema": {
                 "type": "object",
                 "properties": {
                     "ticket": {"type": "string", "pattern": "^T-[0-9]+$", "description": "T-<number>"},
                     "priority": {"type": "integer", "minimum": 1},
                     "urgent": {"type": "boolean"}
                 },
                 "required": ["ticket"]
             }},
             "input": {"value": "joined"}}
        ]
    })
}

/// Two steps, the second waiting for a plain approval.
pub fn gated() -> Value {
    json!({
        "id": "gated",
        "name": "gated",
        "steps": [
            {"name": "prepare", "action": "transform", "input": {"set": {"ready": "{{ context.who }}"}}},
            {"name": "ship", "action": "transform", "requires_approval": true, "input": {"value": 1}}
        ]
    })
}
