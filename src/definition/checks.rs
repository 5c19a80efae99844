//! Semantic checks: what JSON Schema cannot say. Collects every violation before giving up,
//! so a user fixes a definition in one round trip.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::dag::{Dag, DagError};
use super::policies::{ApprovalSpec, RetrySpec, approval_policy, retry_policy};
use super::refs::RefScope;
use super::{DEFAULT_CONCURRENCY, Foreach, MAX_CONCURRENCY, OnFailure, Step, Validator, Workflow};
use crate::expr::{Expr, Template, escape_pointer};
use crate::problems::Violation;
use crate::size::json_len;

#[derive(Deserialize)]
struct WorkflowSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    budget: Option<super::WorkflowBudget>,
    steps: Vec<Value>,
}

#[derive(Deserialize)]
struct StepSpec {
    #[serde(default)]
    id: Option<String>,
    name: String,
    action: String,
    #[serde(default)]
    input: Map<String, Value>,
    #[serde(default)]
    retry: Option<RetrySpec>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    requires_approval: bool,
    #[serde(default)]
    approval: Option<ApprovalSpec>,
    #[serde(default)]
    depends_on: Option<Vec<String>>,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    on_failure: Option<String>,
    #[serde(default)]
    foreach: Option<String>,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    always_run: bool,
    #[serde(default)]
    heartbeat_ms: Option<u64>,
}

/// Checks a schema-valid document and builds the typed workflow.
pub fn build(validator: &Validator, document: &Value) -> Result<Workflow, Vec<Violation>> {
    let spec: WorkflowSpec = serde_json::from_value(document.clone())
        .map_err(|e| vec![Violation::new("", format!("unexpected shape: {e}"))])?;
    let mut v = Vec::new();
    if spec.steps.len() > validator.limits.max_steps {
        v.push(Violation::new(
            "/steps",
            format!(
                "{} steps exceed the limit of {}",
                spec.steps.len(),
                validator.limits.max_steps
            ),
        ));
    }
    let max_input = validator.limits.max_input_bytes;
    for (i, input) in spec
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, raw)| Some((i, raw.get("input")?)))
    {
        let size = json_len(input);
        if size > max_input {
            v.push(Violation::new(
                format!("/steps/{i}/input"),
                format!("the input is {size} bytes, over the limit of {max_input}"),
            ));
        }
    }
    let mut specs = Vec::with_capacity(spec.steps.len());
    for (i, raw) in spec.steps.iter().enumerate() {
        match StepSpec::deserialize(raw) {
            Ok(s) => specs.push(s),
            Err(e) => v.push(Violation::new(
                format!("/steps/{i}"),
                format!("unexpected shape: {e}"),
            )),
        }
    }
    if !v.is_empty() {
        return Err(v);
    }
    check_unique(&specs, &mut v);
    let edges: Vec<(&str, Option<&[String]>)> = specs
        .iter()
        .map(|s| (s.name.as_str(), s.depends_on.as_deref()))
        .collect();
    let dag = match Dag::build(&edges) {
        Ok(dag) => Some(dag),
        Err(errors) => {
            v.extend(errors.into_iter().map(|e| dag_violation(e, &specs)));
            None
        }
    };
    let names: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut steps = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        let scope = RefScope {
            step: i,
            names: &names,
            dag: dag.as_ref(),
            secrets: &validator.secrets,
            secrets_allowed: false,
            in_foreach: specs[i].foreach.is_some(),
        };
        if let Some(step) = build_step(validator, i, s, &scope, &mut v) {
            steps.push(step);
        }
    }
    match dag {
        Some(dag) if v.is_empty() => Ok(Workflow {
            name: spec.name,
            description: spec.description,
            timeout: spec.timeout_ms.map(Duration::from_millis),
            budget: spec.budget,
            has_always_run: steps.iter().any(|s| s.always_run),
            steps,
            dag,
        }),
        _ => {
            v.sort();
            v.dedup();
            Err(v)
        }
    }
}

fn check_unique(specs: &[StepSpec], v: &mut Vec<Violation>) {
    use std::collections::hash_map::Entry;
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, s) in specs.iter().enumerate() {
        if let Entry::Occupied(first) = names.entry(&s.name) {
            v.push(Violation::new(
                format!("/steps/{i}/name"),
                format!(
                    "duplicate step name {:?} (first used by step {})",
                    s.name,
                    first.get()
                ),
            ));
        } else {
            names.insert(&s.name, i);
        }
        let Some(id) = &s.id else { continue };
        if let Entry::Occupied(first) = ids.entry(id) {
            v.push(Violation::new(
                format!("/steps/{i}/id"),
                format!(
                    "duplicate step id {id:?} (first used by step {})",
                    first.get()
                ),
            ));
        } else {
            ids.insert(id, i);
        }
    }
}

fn dag_violation(error: DagError, specs: &[StepSpec]) -> Violation {
    match error {
        DagError::UnknownStep {
            step,
            position,
            name,
        } => Violation::new(
            format!("/steps/{step}/depends_on/{position}"),
            format!("depends on unknown step {name:?}"),
        ),
        DagError::Cycle(path) => {
            let names: Vec<&str> = path.iter().map(|&i| specs[i].name.as_str()).collect();
            Violation::new(
                format!("/steps/{}/depends_on", path[0]),
                format!(
                    "depends_on forms a cycle: {} (each depends on the next)",
                    names.join(" → ")
                ),
            )
        }
    }
}

fn build_step(
    validator: &Validator,
    i: usize,
    s: &StepSpec,
    scope: &RefScope<'_>,
    v: &mut Vec<Violation>,
) -> Option<Step> {
    let at = format!("/steps/{i}");
    if !validator.actions.knows(&s.action) {
        let known = validator.actions.names();
        v.push(Violation::new(
            format!("{at}/action"),
            format!(
                "unknown action {:?}; known actions: {}",
                s.action,
                known.join(", ")
            ),
        ));
        return None;
    }
    for violation in validator.actions.check_input(&s.action, &s.input) {
        v.push(Violation::new(
            format!("{at}/input{}", violation.pointer),
            violation.message,
        ));
    }
    let mut input = s.input.clone();
    let mut expressions = Vec::new();
    for &field in validator.actions.expression_fields(&s.action) {
        let Some(value) = input.shift_remove(field) else {
            continue;
        };
        let pointer = format!("{at}/input/{}", escape_pointer(field));
        match value.as_str().map(Expr::compile) {
            Some(Ok(expr)) => {
                scope.check_all(
                    &pointer,
                    expr.references()
                        .into_iter()
                        .map(|r| (String::new(), r))
                        .collect(),
                    v,
                );
                expressions.push((field.to_owned(), expr));
            }
            Some(Err(e)) => v.push(Violation::new(pointer, format!("invalid expression: {e}"))),
            None => v.push(Violation::new(pointer, "must be an expression string")),
        }
    }
    let input = match Template::compile(&Value::Object(input)) {
        Ok(t) => {
            let input_scope = RefScope {
                secrets_allowed: validator.actions.sends_out(&s.action),
                ..*scope
            };
            input_scope.check_all(&format!("{at}/input"), t.references(), v);
            for (pointer, weight) in t.weights() {
                if let Some(misuse) = weight.secret_misuse {
                    v.push(Violation::new(format!("{at}/input{pointer}"), misuse));
                }
            }
            Some(t)
        }
        Err((pointer, e)) => {
            v.push(Violation::new(
                format!("{at}/input{pointer}"),
                format!("invalid template: {e}"),
            ));
            None
        }
    };
    let when = s
        .when
        .as_deref()
        .and_then(|text| match Expr::compile(text) {
            Ok(expr) => {
                scope.check_all(
                    &format!("{at}/when"),
                    expr.references()
                        .into_iter()
                        .map(|r| (String::new(), r))
                        .collect(),
                    v,
                );
                Some(expr)
            }
            Err(e) => {
                v.push(Violation::new(
                    format!("{at}/when"),
                    format!("invalid expression: {e}"),
                ));
                None
            }
        });
    let retry = retry_policy(validator, &at, s.retry.as_ref(), v);
    let approval = approval_policy(validator, &at, s.requires_approval, s.approval.as_ref(), v);
    let foreach = foreach(&at, s, scope, v);
    if s.heartbeat_ms.is_some() && s.action != "task" {
        v.push(Violation::new(
            format!("{at}/heartbeat_ms"),
            "heartbeat_ms applies only to task steps (the lease of a worker's claim)",
        ));
    }
    Some(Step {
        index: i,
        id: s.id.clone().unwrap_or_else(|| s.name.clone()),
        name: s.name.clone(),
        action_name: s.action.clone(),
        input: input?,
        expressions,
        retry: retry?,
        timeout: s.timeout_ms.map(Duration::from_millis),
        approval: approval?,
        when: if s.when.is_some() { Some(when?) } else { None },
        on_failure: match s.on_failure.as_deref() {
            Some("continue") => OnFailure::Continue,
            _ => OnFailure::Fail,
        },
        foreach: foreach?,
        always_run: s.always_run,
        heartbeat: s.heartbeat_ms.map(Duration::from_millis),
    })
}

/// Actions whose step waits for something outside the run; they cannot run per item.
const PARKING_ACTIONS: &[&str] = &["wait", "event", "workflow", "condition", "task"];

/// A step's `foreach` expression and `concurrency`.
fn foreach(
    at: &str,
    s: &StepSpec,
    scope: &RefScope<'_>,
    v: &mut Vec<Violation>,
) -> Option<Option<Foreach>> {
    let Some(text) = s.foreach.as_deref() else {
        if s.concurrency.is_some() {
            v.push(Violation::new(
                format!("{at}/concurrency"),
                "only a foreach step has a concurrency",
            ));
            return None;
        }
        return Some(None);
    };
    if PARKING_ACTIONS.contains(&s.action.as_str()) {
        v.push(Violation::new(
            format!("{at}/foreach"),
            match s.action.as_str() {
                "condition" => "a condition step decides for the whole run; it cannot run \
                                per item (foreach)"
                    .to_owned(),
                action => format!(
                    "a {action} step waits for something outside the run; it cannot run per \
                     item (foreach)"
                ),
            },
        ));
        return None;
    }
    if s.when
        .as_deref()
        .is_some_and(|w| Expr::compile(w).is_ok_and(|e| e.is_heavy()))
    {
        v.push(Violation::new(
            format!("{at}/when"),
            "the when of a foreach step must be a light expression (a comparison of \
             values, not loops or calls): it is evaluated once, before the items",
        ));
        return None;
    }
    let concurrency = s.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        v.push(Violation::new(
            format!("{at}/concurrency"),
            format!("must be between 1 and {MAX_CONCURRENCY}"),
        ));
        return None;
    }
    match Expr::compile(text) {
        Ok(items) if items.is_heavy() => {
            v.push(Violation::new(
                format!("{at}/foreach"),
                "must be a light expression (a path such as context.files or \
                 steps.list.output.items, with light filters): it is evaluated in the run's \
                 own task",
            ));
            None
        }
        Ok(items) => {
            let outer = RefScope {
                in_foreach: false,
                ..*scope
            };
            outer.check_all(
                &format!("{at}/foreach"),
                items
                    .references()
                    .into_iter()
                    .map(|r| (String::new(), r))
                    .collect(),
                v,
            );
            Some(Some(Foreach { items, concurrency }))
        }
        Err(e) => {
            v.push(Violation::new(
                format!("{at}/foreach"),
                format!("invalid expression: {e}"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Invalid, Limits, Stage, WorkflowSchema};
    use super::*;
    use crate::outbound::HttpClient;
    use serde_json::json;

    fn validator() -> Validator {
        let config =
            crate::config::Config::from_raw(std::path::Path::new("t"), Default::default()).unwrap();
        let actions = crate::actions::Registry::new(&config.services, HttpClient::new().unwrap());
        Validator::new(
            WorkflowSchema::bundled().unwrap(),
            std::sync::Arc::new(actions),
            Limits {
                max_steps: 10,
                max_retries: 5,
                max_input_bytes: 4096,
            },
            false,
        )
    }

    fn violations(doc: Value) -> Vec<Violation> {
        match validator().validate(&doc) {
            Ok(_) => vec![],
            Err(Invalid { stage, violations }) => {
                assert_eq!(stage, Stage::Semantic, "{violations:?}");
                violations
            }
        }
    }

    fn http(name: &str) -> Value {
        json!({"name": name, "action": "http", "input": {"url": "http://127.0.0.1:1/x"}})
    }

    #[test]
    fn a_valid_dag_builds() {
        let wf = validator()
            .validate(&json!({"name": "w", "steps": [
                http("a"),
                {"name": "b", "action": "transform", "depends_on": ["a"], "input": {"set": {"x": "{{ steps.a.output.body }}"}}},
                {"name": "c", "action": "condition", "depends_on": ["a"], "input": {"if": "steps.a.status == 'SUCCEEDED'"}},
                {"name": "d", "action": "transform", "depends_on": ["b", "c"], "when": "context.x", "input": {"value": 1}}
            ]}))
            .unwrap();
        assert_eq!(wf.dag.parents(3), [1, 2]);
        assert_eq!(wf.steps[2].expressions.len(), 1);
    }

    #[test]
    fn the_second_duplicate_name_is_reported() {
        let v = violations(json!({"name": "w", "steps": [http("a"), http("a")]}));
        assert_eq!(v[0].pointer, "/steps/1/name");
    }

    #[test]
    fn unknown_actions_are_named() {
        let v = violations(json!({"name": "w", "steps": [{"name": "a", "action": "teleport"}]}));
        assert_eq!(v[0].pointer, "/steps/0/action");
        assert!(v[0].message.contains("teleport"));
    }

    #[test]
    fn non_http_urls_are_rejected() {
        let v = violations(
            json!({"name": "w", "steps": [{"name": "a", "action": "http", "input": {"url": "file:///etc/passwd"}}]}),
        );
        assert_eq!(v[0].pointer, "/steps/0/input/url");
    }

    #[test]
    fn unknown_dependencies_and_cycles_are_reported() {
        let v = violations(json!({"name": "w", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}, "depends_on": ["zzz"]}
        ]}));
        assert_eq!(v[0].pointer, "/steps/0/depends_on/0");
        let v = violations(json!({"name": "w", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}, "depends_on": ["b"]},
            {"name": "b", "action": "transform", "input": {"value": 1}, "depends_on": ["a"]}
        ]}));
        assert!(
            v[0].message.contains("cycle") && v[0].message.contains("a → b → a")
                || v[0].message.contains("b → a → b"),
            "{v:?}"
        );
    }

    #[test]
    fn templates_may_only_read_upstream_steps() {
        let v = violations(json!({"name": "w", "steps": [
            {"name": "a", "action": "transform", "input": {"value": "{{ steps.b.output }}"}, "depends_on": []},
            {"name": "b", "action": "transform", "input": {"value": 1}, "depends_on": []}
        ]}));
        assert_eq!(v[0].pointer, "/steps/0/input/value");
        assert!(v[0].message.contains("not upstream"), "{v:?}");
        let v = violations(json!({"name": "w", "steps": [
            {"name": "a", "action": "transform", "input": {"value": "{{ steps.nope.output }}"}},
            {"name": "b", "action": "transform", "input": {"value": "{{ contxt.x }}"}}
        ]}));
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            v[1].message.contains("unknown variable \"contxt\""),
            "{v:?}"
        );
    }

    #[test]
    fn template_syntax_errors_point_into_the_input() {
        let v = violations(json!({"name": "w", "steps": [
            {"name": "a", "action": "transform", "input": {"value": {"deep": ["{{ 1 + }}"]}}}
        ]}));
        assert_eq!(v[0].pointer, "/steps/0/input/value/deep/0");
    }

    #[test]
    fn retry_bounds_are_checked() {
        let v = violations(json!({"name": "w", "steps": [
            {"name": "a", "action": "http", "input": {"url": "http://x"}, "retry": {"max": 50, "backoff_ms": 70000}}
        ]}));
        let pointers: Vec<_> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/steps/0/retry/backoff_ms", "/steps/0/retry/max"]
        );
    }

    #[test]
    fn too_many_steps_are_refused() {
        let steps: Vec<Value> = (0..11).map(|i| http(&format!("s{i}"))).collect();
        let v = violations(json!({"name": "w", "steps": steps}));
        assert_eq!(v[0].pointer, "/steps");
    }

    #[test]
    fn an_invalid_approval_schema_is_reported() {
        let v = violations(json!({"name": "w", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}, "approval": {"input_schema": {"type": 5}}}
        ]}));
        assert_eq!(v[0].pointer, "/steps/0/approval/input_schema");
    }
}
