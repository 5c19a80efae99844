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
