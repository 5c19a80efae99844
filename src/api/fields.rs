//! Reading the members of a JSON object body one by one, collecting every violation with
//! its pointer, so that a body with several mistakes is answered with all of them.

use serde_json::{Map, Value};

use super::ApiError;
use super::body::Document;
use crate::problems::Violation;

/// The longest schedule id or trigger name.
const MAX_NAME: usize = 128;

/// An object body whose members are taken as they are read.
pub(super) struct Fields {
    map: Map<String, Value>,
    violations: Vec<Violation>,
}

impl Fields {
    /// The body, which must be a JSON object.
    pub fn of(doc: Document) -> Result<Self, ApiError> {
        match doc.0 {
            Value::Object(map) => Ok(Self {
                map,
                violations: Vec::new(),
            }),
            _ => Err(ApiError::bad_request(
                "",
                "the request body must be a JSON object",
            )),
        }
    }

    /// Records a violation at `/key`.
    pub fn refuse(&mut self, key: &str, message: impl Into<String>) {
        self.violations
            .push(Violation::new(format!("/{key}"), message.into()));
    }

    /// Records violations whose pointers are already complete.
    pub fn extend(&mut self, violations: Vec<Violation>) {
        self.violations.extend(violations);
    }

    /// Member `key` as it is, `null` counting as absent.
    pub fn value(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    /// A string member; absent is a violation when `required`.
    pub fn string(&mut self, key: &str, required: bool) -> Option<String> {
        match self.value(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.refuse(key, format!("{key} must be a non-empty string"));
                None
            }
            None if required => {
                self.refuse(key, format!("{key} is required"));
                None
            }
            None => None,
        }
    }

    /// An identifier (`[A-Za-z0-9._-]`, at most 128 characters), as ids and names are.
    pub fn name(&mut self, key: &str, required: bool) -> Option<String> {
        let name = self.string(key, required)?;
        let fine = name.len() <= MAX_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !fine {
            self.refuse(
                key,
                format!("{key} must be 1 to {MAX_NAME} letters, digits, '.', '_' or '-'"),
            );
            return None;
        }
        Some(name)
    }

    /// An object member (absent: `None`).
    pub fn object(&mut self, key: &str) -> Option<Map<String, Value>> {
        match self.value(key)? {
            Value::Object(map) => Some(map),
            _ => {
                self.refuse(key, format!("{key} must be an object"));
                None
            }
        }
    }

    /// A boolean member (absent: `None`).
    pub fn boolean(&mut self, key: &str) -> Option<bool> {
        match self.value(key)? {
            Value::Bool(b) => Some(b),
            _ => {
                self.refuse(key, format!("{key} must be true or false"));
                None
            }
        }
    }

    /// Ends reading: members nobody read are unknown; any violation answers `400`.
    pub fn finish(mut self) -> Result<(), ApiError> {
        let unknown: Vec<String> = self.map.keys().cloned().collect();
        for key in unknown {
            self.refuse(&key, format!("unknown field {key:?}"));
        }
        if self.violations.is_empty() {
            return Ok(());
        }
        let detail = match self.violations.as_slice() {
            [one] => one.message.clone(),
            many => format!("{} problems in the request body", many.len()),
        };
        Err(ApiError::BadRequest {
            detail,
            errors: self.violations,
        })
    }
}
