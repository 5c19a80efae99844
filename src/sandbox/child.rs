//! The sandbox child: `orchestrator sandbox` reads one request per line on stdin, evaluates
//! its parts under the budget it was started with, and answers one line on stdout. Its
//! address space is capped first, so a template that grows memory without end makes this
//! process fail its allocation and die, which the server reports as the template's fault.

use std::io::{BufRead, Write};
use std::sync::Arc;

use minijinja::value::Value as MjValue;
use serde_json::{Map, Value};

use super::{Answer, Request};
use crate::expr::{self, Budget, Scope, Secrets};

/// Why the child could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot cap the sandbox's memory: {0}")]
    Limit(#[source] std::io::Error),
    #[error("cannot talk to the server: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves requests until stdin closes.
pub fn run(budget: Budget, memory_bytes: u64) -> Result<(), ChildError> {
    rlimit::setrlimit(rlimit::Resource::AS, memory_bytes, memory_bytes)
        .map_err(ChildError::Limit)?;
    expr::set_budget(budget);
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let answer = match serde_json::from_str::<Request>(&line?) {
            Ok(request) => answer(request),
            Err(e) => Answer::Failed {
                index: 0,
                message: format!("malformed request: {e}"),
            },
        };
        let mut text = serde_json::to_vec(&answer).unwrap_or_default();
        text.push(b'\n');
        stdout.write_all(&text)?;
        stdout.flush()?;
    }
    Ok(())
}

fn answer(request: Request) -> Answer {
    let scope = scope(request.scope);
    let mut values = Vec::with_capacity(request.parts.len());
    for (index, part) in request.parts.iter().enumerate() {
        match part.evaluate(&scope) {
            Ok(value) => values.push(value),
            Err(e) => {
                return Answer::Failed {
                    index,
                    message: e.message,
                };
            }
        }
    }
    Answer::Values(values)
}

/// The template scope of a request: `context`, `steps` and `run` as sent; no secrets
/// (templates that read secrets are always light and never come here).
fn scope(mut roots: Map<String, Value>) -> Scope {
    let mut take = |name: &str| {
        roots
            .remove(name)
            .map(|v| expr::to_scope_value(&v))
            .unwrap_or(MjValue::UNDEFINED)
    };
    Scope {
        context: take("context"),
        steps: take("steps"),
        run: take("run"),
        secrets: Arc::new(Secrets::default()),
        item: take("item"),
        index: take("index"),
    }
}
