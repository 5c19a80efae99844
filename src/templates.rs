//! Workflow templates: the pack loaded at start (`templates/templates.json`, compiled in,
//! or `templates.path`) and templates stored through the API.
//!
//! A template comes in two forms. The parameterised one is `{name, description?, params?,
//! workflow}`: `params` is a JSON Schema object (with `default`s) for the parameters and
//! `workflow` a definition. The Go service's form is the workflow itself, `{name,
//! description?, steps, …}` (with an optional `params` schema beside). In both, strings may
//! hold `[[ params.x ]]` placeholders, filled at instantiation; `{{ }}` templates are left
//! for run time, so the two never collide. A template is only accepted when instantiating
//! it with its defaults (or sample values) yields a valid workflow.
//!
//! The bundled pack never stops start-up (an operator's `policy.workflow_schema` or
//! declared secrets apply when one of its templates is instantiated); a pack of the
//! operator's own (`templates.path`) and templates stored through the API are checked in
//! full.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::definition::{Invalid, Stage, Validator, Workflow};
use crate::expr::render_params;
use crate::problems::Violation;

/// The bundled template pack.
pub const BUNDLED_PACK: &str = include_str!("../templates/templates.json");

const TEMPLATE_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["name", "workflow"],
  "properties": {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"},
    "description": {"type": "string"},
    "params": {"type": "object"},
    "workflow": {"type": "object"}
  },
  "additionalProperties": false
}"#;

/// The Go service's workflow-shaped form: the template is the workflow.
const WORKFLOW_FORM_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["name", "steps"],
  "properties": {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"},
    "description": {"type": "string"},
    "params": {"type": "object"},
    "steps": {"type": "array"}
  }
}"#;

/// True when `body` is a parameterised template (`workflow` inside), false for the
/// workflow-shaped form.
fn parameterised(body: &Value) -> bool {
    body.get("workflow").is_some() || body.get("steps").is_none()
}

/// The workflow a template fills: its `workflow`, or the template itself without `params`.
fn workflow_of(body: &Value) -> Value {
    if parameterised(body) {
        return body.get("workflow").cloned().unwrap_or(Value::Null);
    }
    let mut workflow = body.clone();
    if let Value::Object(map) = &mut workflow {
        map.remove("params");
    }
    workflow
}

/// A checked template.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    /// The template as submitted.
    pub body: Value,
}

/// The pack loaded at start, by name.
#[derive(Debug, Clone, Default)]
pub struct Pack {
    templates: BTreeMap<String, Template>,
}

/// Why the pack cannot be loaded; start-up stops with this message.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct PackError {
    pub source_name: String,
    pub message: String,
}

impl Pack {
    /// Loads and checks the pack at `path`, or the bundled pack.
    pub fn load(path: Option<&Path>, validator: &Validator) -> Result<Self, PackError> {
        let (source_name, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| PackError {
                    source_name: p.display().to_string(),
                    message: format!("cannot read: {e}"),
                })?,
            ),
            None => (
                "(bundled) templates/templates.json".to_owned(),
                BUNDLED_PACK.to_owned(),
            ),
        };
        let error = |message: String| PackError {
            source_name: source_name.clone(),
            message,
        };
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| error(format!("not JSON: {e}")))?;
        let items = doc
            .get("templates")
            .and_then(Value::as_array)
            .ok_or_else(|| error("expected {\"templates\": [...]}".into()))?;
        let mut templates = BTreeMap::new();
        let bundled = path.is_none();
        for (i, body) in items.iter().enumerate() {
            let checked = if bundled {
                // The bundled examples never stop start-up: one that does not instantiate
                // under this server's config (its schema, its declared secrets) is refused
                // when it is instantiated, with the reason.
                check_shape(body).inspect(|t| {
                    if let Err(e) = check(body, validator) {
                        tracing::warn!(template = %t.name, error = %e, "bundled template does not instantiate with its sample parameters on this server");
                    }
                })
            } else {
                check(body, validator)
            };
            let t = checked.map_err(|e| {
                let detail: Vec<String> = e
                    .violations
                    .iter()
                    .map(|v| format!("{} {}", v.pointer, v.message))
                    .collect();
                error(format!(
                    "template {i}: {}: {}",
                    e.title(),
                    detail.join("; ")
                ))
            })?;
            if templates.insert(t.name.clone(), t).is_some() {
                return Err(error(format!("template {i}: duplicate name")));
            }
        }
        Ok(Self { templates })
    }

    /// A pack template by name.
    pub fn get(&self, name: &str) -> Option<&Template> {
        self.templates.get(name)
    }

    /// All pack templates by name.
    pub fn iter(&self) -> impl Iterator<Item = &Template> {
        self.templates.values()
    }
}

fn shape_violations(body: &Value) -> Vec<Violation> {
    let text = if parameterised(body) {
        TEMPLATE_SCHEMA
    } else {
        WORKFLOW_FORM_SCHEMA
    };
    // The schemas are constants checked by the tests below.
    let schema: Value = serde_json::from_str(text).unwrap_or(Value::Bool(true));
    match jsonschema::validator_for(&schema) {
        Ok(v) => v
            .iter_errors(body)
            .map(|e| Violation::new(e.instance_path().to_string(), e.to_string()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Checks a template's shape only.
fn check_shape(body: &Value) -> Result<Template, Invalid> {
    let violations = shape_violations(body);
    if !violations.is_empty() {
        return Err(Invalid {
            stage: Stage::Schema,
            violations,
        });
    }
    Ok(Template {
        name: body["name"].as_str().unwrap_or_default().to_owned(),
        body: body.clone(),
    })
}

/// Checks a template's shape, its params schema, and that it instantiates to a valid
/// workflow with default or sample parameters.
pub fn check(body: &Value, validator: &Validator) -> Result<Template, Invalid> {
    let template = check_shape(body)?;
    let mut samples = sample_params(body.get("params"));
    if body.get("params").is_none() {
        // No schema says what they are: a URL where the name says so, else a word.
        for name in placeholders(&workflow_of(body)) {
            let lower = name.to_ascii_lowercase();
            let sample = if ["url", "uri", "endpoint"]
                .iter()
                .any(|s| lower.ends_with(s))
            {
                "http://example.com"
            } else {
                "example"
            };
            samples.insert(name, json!(sample));
        }
    }
    let prefix = if parameterised(body) { "/workflow" } else { "" };
    instantiate(&template, None, &Value::Object(samples), validator).map_err(|mut e| {
        for v in &mut e.violations {
            v.pointer = format!("{prefix}{}", v.pointer);
        }
        e
    })?;
    Ok(template)
}

/// Fills a template with `params` (after defaults) and validates the result. `name`
/// replaces the workflow's name when given. Returns the document and the workflow.
pub fn instantiate(
    template: &Template,
    name: Option<&str>,
    params: &Value,
    validator: &Validator,
) -> Result<(Value, Workflow), Invalid> {
    let schema = template
        .body
        .get("params")
        .cloned()
        .unwrap_or(json!({"type": "object"}));
    let Value::Object(supplied) = params else {
        return Err(Invalid {
            stage: Stage::Schema,
            violations: vec![Violation::new("/params", "params must be an object")],
        });
    };
    let mut merged = defaults(&schema);
    merged.extend(supplied.clone());
    let merged = Value::Object(merged);
    let compiled = jsonschema::validator_for(&schema).map_err(|e| Invalid {
        stage: Stage::Schema,
        violations: vec![Violation::new(
            "/params",
            format!("the template's params schema is invalid: {e}"),
        )],
    })?;
    let violations: Vec<Violation> = compiled
        .iter_errors(&merged)
        .map(|e| Violation::new(format!("/params{}", e.instance_path()), e.to_string()))
        .collect();
    if !violations.is_empty() {
        return Err(Invalid {
            stage: Stage::Schema,
            violations,
        });
    }
    let mut document =
        render_params(&workflow_of(&template.body), &merged).map_err(|e| Invalid {
            stage: Stage::Semantic,
            violations: vec![Violation::new(
                "/params",
                format!("template parameter failed: {e}"),
            )],
        })?;
    if let (Some(name), Value::Object(map)) = (name, &mut document) {
        map.insert("name".into(), Value::String(name.to_owned()));
    }
    let workflow = validator.validate(&document)?;
    Ok((document, workflow))
}

fn properties(schema: &Value) -> impl Iterator<Item = (&String, &Value)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|p| p.iter())
}

fn defaults(schema: &Value) -> Map<String, Value> {
    properties(schema)
        .filter_map(|(k, p)| Some((k.clone(), p.get("default")?.clone())))
        .collect()
}

/// The parameter names a workflow's `[[ params.NAME ]]` placeholders use.
fn placeholders(value: &Value) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut visit = vec![value];
    while let Some(v) = visit.pop() {
        match v {
            Value::String(s) if s.contains("[[") => {
                for (at, found) in s.match_indices("params.") {
                    let name: String = s[at + found.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        names.insert(name);
                    }
                }
            }
            Value::Array(items) => visit.extend(items),
            Value::Object(map) => visit.extend(map.values()),
            _ => {}
        }
    }
    names
}

/// Parameters for checking a template: defaults, else a plausible value of each type.
fn sample_params(schema: Option<&Value>) -> Map<String, Value> {
    let Some(schema) = schema else {
        return Map::new();
    };
    properties(schema)
        .map(|(k, p)| {
            let sample = p
                .get("default")
                .or_else(|| p.get("examples").and_then(|e| e.get(0)))
                .or_else(|| p.get("enum").and_then(|e| e.get(0)))
                .cloned()
                .unwrap_or_else(|| match p.get("type").and_then(Value::as_str) {
                    Some("integer") | Some("number") => json!(1),
                    Some("boolean") => json!(true),
                    Some("array") => json!([]),
                    Some("object") => json!({}),
                    _ if p.get("format").and_then(Value::as_str) == Some("uri") => {
                        json!("http://example.com")
                    }
                    _ => json!("example"),
                });
            (k.clone(), sample)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_shape_schemas_are_valid() {
        for text in [TEMPLATE_SCHEMA, WORKFLOW_FORM_SCHEMA] {
            let schema: Value = serde_json::from_str(text).unwrap();
            assert!(jsonschema::validator_for(&schema).is_ok());
        }
    }

    #[test]
    fn a_workflow_shaped_template_is_its_own_workflow_without_params() {
        let go = json!({"name": "t", "params": {"type": "object"}, "steps": [
            {"name": "a", "action": "http", "input": {"url": "[[ params.url ]]/x", "n": "[[params.n_2]]"}}
        ]});
        assert!(!parameterised(&go));
        assert!(workflow_of(&go).get("params").is_none());
        assert_eq!(
            placeholders(&workflow_of(&go))
                .into_iter()
                .collect::<Vec<_>>(),
            ["n_2", "url"]
        );
        let wrapped = json!({"name": "t", "workflow": {"name": "w", "steps": []}});
        assert!(parameterised(&wrapped));
        assert_eq!(workflow_of(&wrapped)["name"], "w");
    }

    #[test]
    fn defaults_come_first_then_samples_by_type() {
        let schema = json!({"properties": {
            "a": {"type": "string", "default": "x"},
            "b": {"type": "integer"},
            "c": {"type": "string", "format": "uri"},
            "d": {"enum": ["p", "q"]}
        }});
        let s = sample_params(Some(&schema));
        assert_eq!(
            Value::Object(s),
            json!({"a": "x", "b": 1, "c": "http://example.com", "d": "p"})
        );
    }
}
