//! The workflow JSON Schema: the bundled `schema/*.json` (compiled into the binary) or an
//! operator's file named by `policy.workflow_schema`.
//!
//! References to `steps.schema.json` resolve to the operator's sibling file when there is
//! one, else to the bundled schema; nothing is ever fetched from the network.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::problems::Violation;

/// The bundled workflow schema.
pub const WORKFLOW_SCHEMA: &str = include_str!("../../schema/workflow.schema.json");
/// The bundled step schema, `$ref`ed by the workflow schema.
pub const STEPS_SCHEMA: &str = include_str!("../../schema/steps.schema.json");

/// A schema file that cannot be used; start-up stops with this message.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

/// A compiled workflow schema.
pub struct WorkflowSchema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for WorkflowSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkflowSchema")
    }
}

impl WorkflowSchema {
    /// The bundled schema.
    pub fn bundled() -> Result<Self, SchemaError> {
        Self::compile("(bundled) workflow.schema.json", WORKFLOW_SCHEMA, None)
    }

    /// The operator's schema at `path`, or the bundled one when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, SchemaError> {
        let Some(path) = path else {
            return Self::bundled();
        };
        let text = std::fs::read_to_string(path).map_err(|e| SchemaError {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::compile(
            &path.display().to_string(),
            &text,
            path.parent().map(Path::to_owned),
        )
    }

    fn compile(name: &str, text: &str, dir: Option<PathBuf>) -> Result<Self, SchemaError> {
        let error = |message: String| SchemaError {
            path: name.to_owned(),
            message,
        };
        let schema: Value =
            serde_json::from_str(text).map_err(|e| error(format!("not JSON: {e}")))?;
        let validator = jsonschema::options()
            .with_retriever(Retriever { dir })
            .build(&schema)
            .map_err(|e| error(format!("not a valid JSON Schema: {e}")))?;
        Ok(Self { validator })
    }

    /// Every violation of the schema, each with the JSON pointer of the offending member.
    pub fn check(&self, definition: &Value) -> Vec<Violation> {
        let mut out: Vec<Violation> = self
            .validator
            .iter_errors(definition)
            .map(|e| Violation::new(e.instance_path().to_string(), e.to_string()))
            .collect();
        out.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        out.dedup();
        out
    }
}

/// Resolves `steps.schema.json` (and other files next to an operator's schema) locally.
struct Retriever {
    dir: Option<PathBuf>,
}

impl jsonschema::Retrieve for Retriever {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let file = uri.path().as_str().rsplit('/').next().unwrap_or_default();
        if let Some(dir) = &self.dir {
            let candidate = dir.join(file);
            if !file.is_empty() && candidate.is_file() {
                return Ok(serde_json::from_str(&std::fs::read_to_string(candidate)?)?);
            }
        }
        match file {
            "steps.schema.json" => Ok(serde_json::from_str(STEPS_SCHEMA)?),
            "workflow.schema.json" => Ok(serde_json::from_str(WORKFLOW_SCHEMA)?),
            _ => Err(format!("schema {uri} is not available offline").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_bundled_schema_compiles_and_accepts_a_go_payload() {
        let schema = WorkflowSchema::bundled().unwrap();
        let wf = json!({"name": "w", "steps": [
            {"name": "a", "action": "http", "input": {"url": "http://x"}, "retry": {"max": 2, "backoff_ms": 10}},
            {"name": "b", "action": "transform", "input": {"set": {"k": 1}}, "requires_approval": true}
        ]});
        assert_eq!(schema.check(&wf), vec![]);
    }

    #[test]
    fn violations_point_at_the_offending_member() {
        let schema = WorkflowSchema::bundled().unwrap();
        let wf = json!({"name": "w", "steps": [
            {"name": "a", "action": "http", "input": {"url": "http://x"}, "retry": {"max": "two"}}
        ]});
        let v = schema.check(&wf);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pointer, "/steps/0/retry/max");
    }

    #[test]
    fn an_operator_schema_can_reference_the_bundled_steps_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.json");
        std::fs::write(
            &path,
            r#"{"type":"object","required":["name","steps","x-team"],
                "properties":{"steps":{"type":"array","items":{"$ref":"steps.schema.json"}}}}"#,
        )
        .unwrap();
        let schema = WorkflowSchema::load(Some(&path)).unwrap();
        let v = schema.check(&json!({"name": "w", "steps": [{"name": "a"}]}));
        let pointers: Vec<_> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["", "/steps/0"], "{v:?}");
    }

    #[test]
    fn a_broken_operator_schema_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, r#"{"type": 12}"#).unwrap();
        let err = WorkflowSchema::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("bad.json") && err.contains("not a valid JSON Schema"),
            "{err}"
        );
    }
}
