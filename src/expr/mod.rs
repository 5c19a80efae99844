//! The one expression language of workflows (minijinja): `{{ }}` templates in step inputs,
//! `when` and condition `if` expressions, and `[[ ]]` template-pack parameters.
//!
//! A definition's templated strings are compiled once into a [`Template`] tree; literal
//! parts stay plain JSON and cost nothing to render. A string that is exactly one `{{ … }}`
//! evaluates to a typed JSON value; any other string with `{{` renders to text.
//!
//! Every evaluation runs under a [`Budget`]: an instruction count (minijinja's fuel) and a
//! bound on what it produces. Each template is also weighed when compiled ([`weight`]):
//! light ones render in place; heavy ones (loops, calls, multiplication…) must be handed
//! to the sandbox process, see `crate::sandbox`, which is what bounds their memory.

mod params;
mod secrets;
pub mod weight;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock, OnceLock};

use minijinja::value::Value as MjValue;
use minijinja::{Environment, ErrorKind, Expression, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use params::render_params;
pub use secrets::{Redactor, Secrets};
pub use weight::Weight;

/// What one evaluation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Instructions of the template machine (`limits.template_fuel`).
    pub fuel: u64,
    /// Bytes of the result: rendered text, or a value as compact JSON
    /// (`limits.template_bytes`).
    pub max_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            fuel: 1_000_000,
            max_bytes: 1024 * 1024,
        }
    }
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

/// Sets the process's evaluation budget; only the first call (before any evaluation) takes
/// effect. Returns the budget in force.
pub fn set_budget(budget: Budget) -> Budget {
    *BUDGET.get_or_init(|| budget)
}

/// The process's evaluation budget.
pub fn budget() -> Budget {
    *BUDGET.get_or_init(Budget::default)
}

/// Names a template may start with.
pub const ROOTS: [&str; 6] = ["context", "steps", "run", "secrets", "item", "index"];
/// Fields of `steps.<name>` a template may read.
pub const STEP_FIELDS: [&str; 4] = ["output", "status", "http_code", "error"];

static RUNTIME: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(budget().fuel));
    env
});

/// An expression or template that failed to compile or evaluate; the message names it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} in {source_text:?}")]
pub struct ExprError {
    pub source_text: String,
    pub message: String,
}

impl ExprError {
    pub(crate) fn new(source_text: &str, error: impl std::fmt::Display) -> Self {
        // minijinja's alternate form carries the detail ("undefined value", …) on one line.
        let message = format!("{error:#}")
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        Self {
            source_text: source_text.to_owned(),
            message,
        }
    }

    /// An evaluation error, naming the budget when it ran out.
    fn evaluating(source_text: &str, error: minijinja::Error) -> Self {
        if error.kind() == ErrorKind::OutOfFuel {
            return Self::over_budget(
                source_text,
                format!(
                    "the template used up limits.template_fuel ({} instructions)",
                    budget().fuel
                ),
            );
        }
        Self::new(source_text, error)
    }

    /// An evaluation that went over a budget, saying which.
    pub fn over_budget(source_text: &str, message: impl Into<String>) -> Self {
        Self {
            source_text: source_text.to_owned(),
            message: message.into(),
        }
    }

    fn too_large(source_text: &str) -> Self {
        Self::over_budget(
            source_text,
            format!(
                "the result exceeds limits.template_bytes ({} bytes)",
                budget().max_bytes
            ),
        )
    }
}

/// Collects rendered text, refusing more than `limit` bytes (which stops the render).
struct Capped {
    text: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.limit {
            return Err(std::io::Error::other("limits.template_bytes"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A compiled expression (`when`, condition `if`, or the inside of `{{ }}`).
#[derive(Debug)]
pub struct Expr {
    source: String,
    compiled: Expression<'static, 'static>,
    weight: Weight,
}

impl Expr {
    /// Compiles `text`; surrounding `{{ }}` are accepted and ignored.
    pub fn compile(text: &str) -> Result<Self, ExprError> {
        let source = strip_braces(text).unwrap_or(text).trim().to_owned();
        let compiled = RUNTIME
            .compile_expression_owned(source.clone())
            .map_err(|e| ExprError::new(text, e))?;
        let weight = weight::weigh(&source, true);
        Ok(Self {
            source,
            compiled,
            weight,
        })
    }

    /// Evaluates to a JSON value; an undefined result is an error.
    pub fn eval(&self, scope: &impl Vars) -> Result<Value, ExprError> {
        let value = self.eval_raw(scope)?;
        if value.is_undefined() {
            return Err(ExprError::new(&self.source, "undefined value"));
        }
        let value = serde_json::to_value(&value).map_err(|e| ExprError::new(&self.source, e))?;
        if crate::size::json_len(&value) > budget().max_bytes {
            return Err(ExprError::too_large(&self.source));
        }
        Ok(value)
    }

    /// What its tokens say about it (heavy or light, secrets used as they are).
    pub fn weight(&self) -> &Weight {
        &self.weight
    }

    /// True when it must be evaluated in the sandbox.
    pub fn is_heavy(&self) -> bool {
        self.weight.heavy.is_some()
    }

    /// Evaluates as a condition: undefined counts as false.
    pub fn is_true(&self, scope: &impl Vars) -> Result<bool, ExprError> {
        Ok(self.eval_raw(scope)?.is_true())
    }

    fn eval_raw(&self, scope: &impl Vars) -> Result<MjValue, ExprError> {
        self.compiled
            .eval(scope.to_value())
            .map_err(|e| ExprError::evaluating(&self.source, e))
    }

    /// Dotted names the expression reads, e.g. `steps.fetch.output`.
    pub fn references(&self) -> BTreeSet<String> {
        self.compiled
            .undeclared_variables(true)
            .into_iter()
            .collect()
    }

    /// The expression text.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// A compiled JSON value whose strings may hold `{{ }}` templates.
#[derive(Debug)]
pub enum Template {
    /// No templates anywhere below: rendered as is.
    Literal(Value),
    /// Exactly one `{{ expression }}`: renders to the expression's typed value.
    Expr(Expr),
    /// Text with embedded templates: renders to a string.
    Text(Text),
    Array(Vec<Template>),
    Object(Vec<(String, Template)>),
}

impl Template {
    /// Compiles every templated string under `value`.
    pub fn compile(value: &Value) -> Result<Self, (String, ExprError)> {
        Self::compile_at(value, "")
    }

    fn compile_at(value: &Value, pointer: &str) -> Result<Self, (String, ExprError)> {
        if !has_template(value) {
            return Ok(Self::Literal(value.clone()));
        }
        Ok(match value {
            Value::String(s) => match strip_braces(s) {
                Some(_) => Self::Expr(Expr::compile(s).map_err(|e| (pointer.to_owned(), e))?),
                None => Self::Text(Text::compile(s).map_err(|e| (pointer.to_owned(), e))?),
            },
            Value::Array(items) => Self::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Self::compile_at(v, &format!("{pointer}/{i}")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Self::Object(
                map.iter()
                    .map(|(k, v)| {
                        let child = format!("{pointer}/{}", escape_pointer(k));
                        Ok((k.clone(), Self::compile_at(v, &child)?))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => Self::Literal(value.clone()),
        })
    }

    /// Renders every part in place against `scope`, heavy parts included: what the
    /// sandbox does, or a caller that knows the tree is light ([`Self::is_light`]).
    pub fn render(&self, scope: &impl Vars) -> Result<Value, ExprError> {
        self.render_using(scope, &mut std::iter::empty())
    }

    /// Renders against `scope`, taking the value of each heavy part, in tree order, from
    /// `heavy` (as rendered elsewhere) and rendering a heavy part in place only when
    /// `heavy` has run out.
    pub fn render_using(
        &self,
        scope: &impl Vars,
        heavy: &mut dyn Iterator<Item = Value>,
    ) -> Result<Value, ExprError> {
        Ok(match self {
            Self::Literal(v) => v.clone(),
            Self::Expr(e) if e.is_heavy() => match heavy.next() {
                Some(value) => value,
                None => e.eval(scope)?,
            },
            Self::Expr(e) => e.eval(scope)?,
            Self::Text(t) if t.is_heavy() => match heavy.next() {
                Some(value) => value,
                None => Value::String(t.render(scope)?),
            },
            Self::Text(t) => Value::String(t.render(scope)?),
            Self::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.render_using(scope, heavy))
                    .collect::<Result<_, _>>()?,
            ),
            Self::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), t.render_using(scope, heavy)?)))
                    .collect::<Result<Map<_, _>, ExprError>>()?,
            ),
        })
    }

    /// The literal value of member `key` of an object template (`None` when it is absent
    /// or templated).
    pub fn literal_field(&self, key: &str) -> Option<&Value> {
        match self {
            Self::Literal(Value::Object(map)) => map.get(key),
            Self::Object(fields) => match &fields.iter().find(|(k, _)| k == key)?.1 {
                Self::Literal(v) => Some(v),
                _ => None,
            },
            _ => None,
        }
    }

    /// The heavy parts, in tree order, for the sandbox.
    pub fn heavy_parts(&self) -> Vec<Part> {
        let mut out = Vec::new();
        self.collect_heavy(&mut out);
        out
    }

    fn collect_heavy(&self, out: &mut Vec<Part>) {
        match self {
            Self::Expr(e) if e.is_heavy() => out.push(Part::Expr(e.source.clone())),
            Self::Text(t) if t.is_heavy() => out.push(Part::Text(t.source.clone())),
            Self::Array(items) => items.iter().for_each(|t| t.collect_heavy(out)),
            Self::Object(fields) => fields.iter().for_each(|(_, t)| t.collect_heavy(out)),
            _ => {}
        }
    }

    /// True when every part renders in place.
    pub fn is_light(&self) -> bool {
        match self {
            Self::Literal(_) => true,
            Self::Expr(e) => !e.is_heavy(),
            Self::Text(t) => !t.is_heavy(),
            Self::Array(items) => items.iter().all(Self::is_light),
            Self::Object(fields) => fields.iter().all(|(_, t)| t.is_light()),
        }
    }

    /// Every `(JSON pointer, weight)` of the templated strings under this value.
    pub fn weights(&self) -> Vec<(String, Weight)> {
        let mut out = Vec::new();
        self.collect_weights("", &mut out);
        out
    }

    fn collect_weights(&self, pointer: &str, out: &mut Vec<(String, Weight)>) {
        match self {
            Self::Literal(_) => {}
            Self::Expr(e) => out.push((pointer.to_owned(), e.weight.clone())),
            Self::Text(t) => out.push((pointer.to_owned(), t.weight.clone())),
            Self::Array(items) => {
                for (i, t) in items.iter().enumerate() {
                    t.collect_weights(&format!("{pointer}/{i}"), out);
                }
            }
            Self::Object(fields) => {
                for (k, t) in fields {
                    t.collect_weights(&format!("{pointer}/{}", escape_pointer(k)), out);
                }
            }
        }
    }

    /// Every `(JSON pointer, dotted reference)` read by the templates under this value.
    pub fn references(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.collect_references("", &mut out);
        out
    }

    fn collect_references(&self, pointer: &str, out: &mut Vec<(String, String)>) {
        match self {
            Self::Literal(_) => {}
            Self::Expr(e) => {
                out.extend(e.references().into_iter().map(|r| (pointer.to_owned(), r)))
            }
            Self::Text(t) => {
                out.extend(t.references().into_iter().map(|r| (pointer.to_owned(), r)))
            }
            Self::Array(items) => {
                for (i, t) in items.iter().enumerate() {
                    t.collect_references(&format!("{pointer}/{i}"), out);
                }
            }
            Self::Object(fields) => {
                for (k, t) in fields {
                    t.collect_references(&format!("{pointer}/{}", escape_pointer(k)), out);
                }
            }
        }
    }

    /// True when rendering can change the value.
    pub fn is_dynamic(&self) -> bool {
        !matches!(self, Self::Literal(_))
    }
}

/// Text with `{{ }}` or `{% %}` inside, rendered to a string.
#[derive(Debug)]
pub struct Text {
    source: String,
    weight: Weight,
}

impl Text {
    /// Checks the syntax of `source` and weighs it.
    pub fn compile(source: &str) -> Result<Self, ExprError> {
        RUNTIME
            .template_from_str(source)
            .map_err(|e| ExprError::new(source, e))?;
        Ok(Self {
            source: source.to_owned(),
            weight: weight::weigh(source, false),
        })
    }

    /// True when it must be rendered in the sandbox.
    pub fn is_heavy(&self) -> bool {
        self.weight.heavy.is_some()
    }

    /// Renders in place, within the budget.
    pub fn render(&self, scope: &impl Vars) -> Result<String, ExprError> {
        let template = RUNTIME
            .template_from_str(&self.source)
            .map_err(|e| ExprError::new(&self.source, e))?;
        let mut out = Capped {
            text: Vec::new(),
            limit: budget().max_bytes,
        };
        match template.render_captured_to(scope.to_value(), &mut out) {
            Ok(_) => Ok(String::from_utf8_lossy(&out.text).into_owned()),
            Err(e) if e.kind() == ErrorKind::WriteFailure => {
                Err(ExprError::too_large(&self.source))
            }
            Err(e) => Err(ExprError::evaluating(&self.source, e)),
        }
    }

    fn references(&self) -> BTreeSet<String> {
        RUNTIME
            .template_from_str(&self.source)
            .map(|t| t.undeclared_variables(true).into_iter().collect())
            .unwrap_or_default()
    }
}

/// A heavy part of a template, as the sandbox receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "source", rename_all = "snake_case")]
pub enum Part {
    /// An expression; its value.
    Expr(String),
    /// A text template; its rendered text.
    Text(String),
    /// An expression; whether it is true (`when`, condition `if`).
    Condition(String),
}

impl Part {
    /// Evaluates the part in place against `scope`.
    pub fn evaluate(&self, scope: &Scope) -> Result<Value, ExprError> {
        match self {
            Self::Expr(source) => Expr::compile(source)?.eval(scope),
            Self::Text(source) => Text::compile(source)?.render(scope).map(Value::String),
            Self::Condition(source) => Expr::compile(source)?.is_true(scope).map(Value::Bool),
        }
    }

    /// The template text.
    pub fn source(&self) -> &str {
        match self {
            Self::Expr(s) | Self::Text(s) | Self::Condition(s) => s,
        }
    }

    /// Dotted names the part reads (`steps.fetch.output`), or none when it does not parse.
    pub fn references(&self) -> BTreeSet<String> {
        match self {
            Self::Expr(s) | Self::Condition(s) => {
                Expr::compile(s).map(|e| e.references()).unwrap_or_default()
            }
            Self::Text(s) => Text::compile(s).map(|t| t.references()).unwrap_or_default(),
        }
    }
}

/// The variables templates see. Cheap to clone: step scopes are shared, converted once.
#[derive(Clone, Debug)]
pub struct Scope {
    pub context: MjValue,
    pub steps: MjValue,
    pub run: MjValue,
    pub secrets: Arc<Secrets>,
    /// Inside a `foreach` step: the item and its index (undefined elsewhere).
    pub item: MjValue,
    pub index: MjValue,
}

/// What a template reads: a run's [`Scope`], or a trigger's [`RequestScope`].
pub trait Vars {
    /// The variables, as the one map minijinja evaluates against.
    fn to_value(&self) -> MjValue;
}

/// The variables of a webhook trigger's `context` and `filter`: only `request`.
#[derive(Clone, Debug)]
pub struct RequestScope {
    pub request: MjValue,
}

impl Vars for RequestScope {
    fn to_value(&self) -> MjValue {
        minijinja::context! { request => self.request.clone() }
    }
}

impl Vars for Scope {
    fn to_value(&self) -> MjValue {
        minijinja::context! {
            context => self.context.clone(),
            steps => self.steps.clone(),
            run => self.run.clone(),
            secrets => MjValue::from_dyn_object(self.secrets.clone()),
            item => self.item.clone(),
            index => self.index.clone(),
        }
    }
}

impl Scope {
    /// This scope with `item` and `index` set, for one item of a `foreach` step.
    pub fn with_item(&self, item: &Value, index: usize) -> Self {
        Self {
            item: to_scope_value(item),
            index: MjValue::from(index),
            ..self.clone()
        }
    }
}

/// Converts a JSON value for use in a [`Scope`].
pub fn to_scope_value(value: &Value) -> MjValue {
    MjValue::from(minijinja::value::Serde(value))
}

/// [`to_scope_value`] of a JSON object, without copying it into a `Value` first.
pub fn map_scope_value(map: &Map<String, Value>) -> MjValue {
    MjValue::from(minijinja::value::Serde(map))
}

/// The `steps` part of a scope: the per-step values built by [`step_scope`], by name. The
/// value shares the map rather than copying it (a run adds one entry per finished step and
/// builds a scope per step; copying made that quadratic in the run's length).
pub fn steps_scope(steps: &Arc<BTreeMap<String, MjValue>>) -> MjValue {
    MjValue::from_dyn_object(steps.clone())
}

/// The scope entry of one step: `output`, `status`, `http_code`, `error`.
pub fn step_scope(
    output: Option<&Value>,
    status: &str,
    http_code: Option<u16>,
    error: Option<&str>,
) -> MjValue {
    minijinja::context! {
        output => output.map(to_scope_value).unwrap_or(MjValue::from(())),
        status => status,
        http_code => http_code,
        error => error,
    }
}

/// The inside of a string that is exactly one `{{ … }}`, if it is one.
fn strip_braces(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner)
}

fn has_template(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("{{") || s.contains("{%"),
        Value::Array(items) => items.iter().any(has_template),
        Value::Object(map) => map.values().any(has_template),
        _ => false,
    }
}

/// Escapes a key for use in a JSON pointer (RFC 6901).
pub fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use serde_json::json;

    fn scope(context: Value, steps: Value) -> Scope {
        Scope {
            context: to_scope_value(&context),
            steps: to_scope_value(&steps),
            run: to_scope_value(&json!({"id": "run_1", "workflow_id": "wf_1"})),
            secrets: Arc::new(Secrets::new(Arc::new(BTreeMap::from([(
                "API_TOKEN".to_owned(),
                Secret::new("t0ps3cret"),
            )])))),
            item: MjValue::UNDEFINED,
            index: MjValue::UNDEFINED,
        }
    }

    #[test]
    fn a_single_expression_keeps_its_json_type() {
        let s = scope(json!({"n": 3, "tags": ["a", "b"]}), json!({}));
        let t = Template::compile(&json!({"n": "{{ context.n }}", "tags": "{{context.tags}}"}))
            .unwrap();
        assert_eq!(t.render(&s).unwrap(), json!({"n": 3, "tags": ["a", "b"]}));
    }

    #[test]
    fn an_object_converts_as_the_value_holding_it_does() {
        let value = json!({"z": 1, "a": {"y": [1, 2.5, -3], "b": null}, "m": "x", "": true});
        let Value::Object(map) = &value else {
            unreachable!()
        };
        let (direct, wrapped) = (map_scope_value(map), to_scope_value(&value));
        assert_eq!(direct, wrapped);
        assert_eq!(
            format!("{direct:?}"),
            format!("{wrapped:?}"),
            "keys in order"
        );
    }

    #[test]
    fn step_scopes_are_read_by_name() {
        let steps = Arc::new(BTreeMap::from([(
            "a".to_owned(),
            step_scope(Some(&json!({"id": 7})), "SUCCEEDED", Some(200), None),
        )]));
        let mut s = scope(json!({}), json!({}));
        s.steps = steps_scope(&steps);
        let t = Template::compile(&json!(
            "{{ steps.a.output.id }}/{{ steps.a.status }}/{{ steps.a.http_code }}"
        ))
        .unwrap();
        assert_eq!(t.render(&s).unwrap(), json!("7/SUCCEEDED/200"));
    }

    #[test]
    fn mixed_text_renders_to_a_string() {
        let s = scope(json!({"who": "ada"}), json!({"a": {"output": {"id": 7}}}));
        let t = Template::compile(&json!("hi {{ context.who }} #{{ steps.a.output.id }}")).unwrap();
        assert_eq!(t.render(&s).unwrap(), json!("hi ada #7"));
    }

    #[test]
    fn steps_built_from_step_scopes_are_addressable_by_name() {
        let scopes = Arc::new(BTreeMap::from([(
            "a".to_owned(),
            step_scope(Some(&json!({"id": 7})), "SUCCEEDED", Some(200), None),
        )]));
        let mut s = scope(json!({}), json!({}));
        s.steps = steps_scope(&scopes);
        let t = Template::compile(&json!("{{ steps.a.output.id }}")).unwrap();
        assert_eq!(t.render(&s).unwrap(), json!(7));
    }

    #[test]
    fn literals_are_not_templates() {
        let t = Template::compile(&json!({"url": "http://x/y", "n": 1})).unwrap();
        assert!(!t.is_dynamic());
    }

    #[test]
    fn undefined_values_fail_with_the_expression_named() {
        let s = scope(json!({}), json!({}));
        let err = Template::compile(&json!("{{ context.missing }}"))
            .unwrap()
            .render(&s)
            .unwrap_err();
        assert_eq!(err.source_text, "context.missing");
        let err = Template::compile(&json!("x {{ context.missing.deeper }}"))
            .unwrap()
            .render(&s)
            .unwrap_err();
        assert!(err.source_text.contains("context.missing.deeper"), "{err}");
    }

    #[test]
    fn conditions_treat_undefined_as_false_and_accept_braces() {
        let s = scope(json!({"ok": true}), json!({}));
        assert!(
            Expr::compile("context.ok == true")
                .unwrap()
                .is_true(&s)
                .unwrap()
        );
        assert!(
            Expr::compile("{{ context.ok }}")
                .unwrap()
                .is_true(&s)
                .unwrap()
        );
        assert!(
            !Expr::compile("context.absent")
                .unwrap()
                .is_true(&s)
                .unwrap()
        );
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        assert!(Expr::compile("a ==").is_err());
        let (pointer, _) = Template::compile(&json!({"x": ["ok", "{{ a b }}"]})).unwrap_err();
        assert_eq!(pointer, "/x/1");
    }

    #[test]
    fn references_name_nested_lookups_with_their_pointer() {
        let t = Template::compile(&json!({"a/b": "{{ steps.fetch.output.body }}"})).unwrap();
        assert_eq!(
            t.references(),
            vec![("/a~1b".to_owned(), "steps.fetch.output.body".to_owned())]
        );
    }

    #[test]
    fn secrets_resolve_and_are_redacted_from_what_is_stored() {
        let s = scope(json!({}), json!({}));
        let t = Template::compile(&json!("Bearer {{ secrets.API_TOKEN }}")).unwrap();
        assert_eq!(t.render(&s).unwrap(), json!("Bearer t0ps3cret"));
        let mut echoed = json!({"auth": "Bearer t0ps3cret", "t0ps3cret": 1});
        Redactor::new([&Secret::new("t0ps3cret")]).redact(&mut echoed);
        assert_eq!(echoed, json!({"auth": "Bearer ***", "***": 1}));
    }

    #[test]
    fn a_render_stops_at_its_instruction_budget() {
        let s = scope(json!({}), json!({}));
        let spin =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let t = Template::compile(&json!(spin)).unwrap();
        assert!(!t.is_light());
        let started = std::time::Instant::now();
        let e = t.render(&s).unwrap_err();
        assert!(e.message.contains("limits.template_fuel"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn a_render_stops_at_its_size_budget() {
        let s = scope(json!({"x": "y"}), json!({}));
        let grow = "{% for i in range(20) %}{{ 'x' * 1000000 }}{% endfor %}";
        let e = Template::compile(&json!(grow))
            .unwrap()
            .render(&s)
            .unwrap_err();
        assert!(e.message.contains("limits.template_bytes"), "{e}");
        let e = Expr::compile("'x' * 2000000")
            .unwrap()
            .eval(&s)
            .unwrap_err();
        assert!(e.message.contains("limits.template_bytes"), "{e}");
    }

    #[test]
    fn heavy_parts_are_listed_in_tree_order_and_their_values_used() {
        let s = scope(json!({"n": 2}), json!({}));
        let t = Template::compile(&json!({
            "a": "{{ context.n }}",
            "b": "{{ 'x' * context.n }}",
            "c": ["{% if true %}yes{% endif %}"]
        }))
        .unwrap();
        let parts = t.heavy_parts();
        assert_eq!(
            parts,
            [
                Part::Expr("'x' * context.n".into()),
                Part::Text("{% if true %}yes{% endif %}".into())
            ]
        );
        let values: Vec<Value> = parts.iter().map(|p| p.evaluate(&s).unwrap()).collect();
        let rendered = t.render_using(&s, &mut values.into_iter()).unwrap();
        assert_eq!(rendered, json!({"a": 2, "b": "xx", "c": ["yes"]}));
    }
}
