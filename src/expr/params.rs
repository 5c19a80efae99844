//! `[[ params.NAME ]]` placeholders of template-pack bodies, substituted when a template is
//! instantiated; run-time `{{ }}` templates are left alone.

use std::sync::LazyLock;

use minijinja::{Environment, UndefinedBehavior, syntax::SyntaxConfig};
use serde_json::{Map, Value};

use super::{ExprError, to_scope_value};

static PARAMS: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    #[allow(clippy::expect_used)] // fixed delimiters, checked by the tests below
    let syntax = SyntaxConfig::builder()
        .block_delimiters("[%", "%]")
        .variable_delimiters("[[", "]]")
        .comment_delimiters("[#", "#]")
        .build()
        .expect("valid parameter syntax");
    env.set_syntax(syntax);
    env
});

/// Renders `[[ params.x ]]` placeholders of a template-pack body; a string that is exactly
/// one placeholder yields the parameter's typed value.
pub fn render_params(value: &Value, params: &Value) -> Result<Value, ExprError> {
    Ok(match value {
        Value::String(s) if s.contains("[[") || s.contains("[%") => {
            let ctx = minijinja::context! { params => to_scope_value(params) };
            let trimmed = s.trim();
            let single = trimmed
                .strip_prefix("[[")
                .and_then(|r| r.strip_suffix("]]"))
                .filter(|inner| !inner.contains("[[") && !inner.contains("]]"));
            match single {
                Some(inner) => {
                    let expr = PARAMS
                        .compile_expression(inner.trim())
                        .map_err(|e| ExprError::new(s, e))?;
                    let v = expr.eval(ctx).map_err(|e| ExprError::new(s, e))?;
                    if v.is_undefined() {
                        return Err(ExprError::new(s, "undefined value"));
                    }
                    serde_json::to_value(&v).map_err(|e| ExprError::new(s, e))?
                }
                None => Value::String(
                    PARAMS
                        .render_str(s, ctx)
                        .map_err(|e| ExprError::new(s, e))?,
                ),
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_params(v, params))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_params(v, params)?)))
                .collect::<Result<Map<_, _>, ExprError>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_params_use_square_brackets_and_leave_runtime_templates_alone() {
        let body =
            json!({"url": "[[ params.base ]]/x", "n": "[[ params.n ]]", "t": "{{ context.a }}"});
        let out = render_params(&body, &json!({"base": "http://h", "n": 2})).unwrap();
        assert_eq!(
            out,
            json!({"url": "http://h/x", "n": 2, "t": "{{ context.a }}"})
        );
    }
}
