//! A problem with something a client sent, at a JSON pointer: the unit every `400`
//! answer lists, whether it comes from definition checks, action input checks, or a
//! decision's input.

use serde::Serialize;

/// One problem at a JSON pointer (`""` for the whole document).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

impl Violation {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// An error and its causes on one line, each cause once (a cause whose text the line
/// already holds is not repeated): what logs and `problem+json` details show.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeating(#[source] std::io::Error);

    #[test]
    fn a_chain_names_each_cause_once() {
        let io = || std::io::Error::other("disk full");
        assert_eq!(chain(&Outer(io())), "outer: disk full");
        assert_eq!(chain(&Repeating(io())), "outer: disk full");
    }
}
