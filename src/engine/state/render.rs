//! Rendering a step's input: here, when every template of the step is light; otherwise in
//! the step's own task, with the heavy parts evaluated in the sandbox, so that no render
//! ever holds up the run's task (and its cancel) or the server.
//!
//! A deferred render keeps the scope as it was when the step started and evaluates, in
//! order: a heavy `when` (false skips the step), the heavy parts of the input, and the
//! heavy condition expressions.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::definition::Workflow;
use crate::expr::{ExprError, Part, Scope};
use crate::size::json_len;

/// A render left to the step's task.
#[derive(Debug)]
pub struct Deferred {
    wf: Arc<Workflow>,
    index: usize,
    scope: Scope,
    /// The step's heavy `when`, evaluated first.
    when: bool,
    parts: Vec<Part>,
}

/// What a deferred render came to.
#[derive(Debug)]
pub enum Rendered {
    Input(Value),
    /// The step's `when` is false.
    Skipped(String),
}

impl Deferred {
    /// The deferred render of step `index`, or `None` when all of it is light.
    pub fn of(wf: &Arc<Workflow>, index: usize, scope: &Scope) -> Option<Self> {
        let step = &wf.steps[index];
        let when = step.when.as_ref().filter(|w| w.is_heavy());
        let mut parts: Vec<Part> = when
            .map(|w| Part::Condition(w.source().to_owned()))
            .into_iter()
            .collect();
        parts.extend(step.input.heavy_parts());
        parts.extend(
            step.expressions
                .iter()
                .filter(|(_, e)| e.is_heavy())
                .map(|(_, e)| Part::Condition(e.source().to_owned())),
        );
        (!parts.is_empty()).then(|| Self {
            wf: wf.clone(),
            index,
            scope: scope.clone(),
            when: when.is_some(),
            parts,
        })
    }

    /// The heavy parts and the part of the scope they read, for the sandbox.
    pub fn request(&self) -> (Vec<Part>, Map<String, Value>) {
        (self.parts.clone(), sandbox_scope(&self.scope, &self.parts))
    }

    /// Completes the render with the values the sandbox gave the heavy parts.
    pub fn finish(&self, values: Vec<Value>) -> Result<Rendered, ExprError> {
        let mut values = values.into_iter();
        if self.when {
            let step = &self.wf.steps[self.index];
            let when = step.when.as_ref().map(|w| w.source()).unwrap_or_default();
            if values.next() != Some(Value::Bool(true)) {
                return Ok(Rendered::Skipped(format!(
                    "skipped: when {when:?} is false"
                )));
            }
        }
        render_input(&self.wf, self.index, &self.scope, &mut values).map(Rendered::Input)
    }
}

/// Renders step `index`'s input against `scope`, taking the values of heavy parts from
/// `heavy` in order, and adds its condition expressions as booleans.
pub fn render_input(
    wf: &Workflow,
    index: usize,
    scope: &Scope,
    heavy: &mut dyn Iterator<Item = Value>,
) -> Result<Value, ExprError> {
    let step = &wf.steps[index];
    let mut input = step.input.render_using(scope, heavy)?;
    for (key, expr) in &step.expressions {
        let value = if expr.is_heavy() {
            match heavy.next() {
                Some(v) => v.as_bool().unwrap_or(false),
                None => expr.is_true(scope)?,
            }
        } else {
            expr.is_true(scope)?
        };
        if let Value::Object(map) = &mut input {
            map.insert(key.clone(), Value::Bool(value));
        }
    }
    Ok(input)
}

/// Refuses an input larger than `max` bytes, with the message the step fails with.
pub fn check_input_size(input: &Value, max: usize) -> Result<(), String> {
    let size = json_len(input);
    if size > max {
        return Err(format!(
            "the rendered input is {size} bytes, over limits.max_input_bytes ({max})"
        ));
    }
    Ok(())
}

/// The roots of `scope` that `parts` read, as JSON: `context` and `run` whole, and of
/// `steps` only the steps named (all of them when a part reads `steps` as a whole).
fn sandbox_scope(scope: &Scope, parts: &[Part]) -> Map<String, Value> {
    let mut roots = BTreeSet::new();
    let mut steps = BTreeSet::new();
    let mut all_steps = false;
    for part in parts {
        for reference in part.references() {
            let mut path = reference.split('.');
            let root = path.next().unwrap_or_default().to_owned();
            match (root.as_str(), path.next()) {
                ("steps", Some(name)) => {
                    steps.insert(name.to_owned());
                }
                ("steps", None) => all_steps = true,
                _ => {}
            }
            roots.insert(root);
        }
    }
    let mut out = Map::new();
    let json = |v: &minijinja::value::Value| serde_json::to_value(v).unwrap_or(Value::Null);
    if roots.contains("context") {
        out.insert("context".into(), json(&scope.context));
    }
    for (name, value) in [
        ("run", &scope.run),
        ("item", &scope.item),
        ("index", &scope.index),
    ] {
        if roots.contains(name) && !value.is_undefined() {
            out.insert(name.into(), json(value));
        }
    }
    if all_steps {
        out.insert("steps".into(), json(&scope.steps));
    } else if !steps.is_empty() {
        let picked: Map<String, Value> = steps
            .into_iter()
            .filter_map(|name| {
                let step = scope.steps.get_attr(&name).ok()?;
                (!step.is_undefined()).then(|| (name, json(&step)))
            })
            .collect();
        out.insert("steps".into(), Value::Object(picked));
    }
    out
}
