//! Which templates are safe to render inside the server, read from their tokens.
//!
//! A *light* template cannot build anything much larger than the values it reads: it has
//! no statements (`{% %}`), no function calls, no `*` or `**`, only filters from
//! [`LIGHT_FILTERS`] (without arguments, except the few that take bounded ones), and at
//! most [`MAX_LIGHT_REFERENCES`] variable references. Its cost is linear in its input, so
//! it renders in place under the instruction budget. Anything else is *heavy* and renders
//! in the sandbox process, whose memory and time are bounded by the operating system.
//!
//! A template that reads `secrets` must interpolate each secret as it is: plain text,
//! `~` and other variables, nothing that could transform a secret into something its
//! redaction would not recognise.

use minijinja::machinery::{Token, tokenize};
use minijinja::syntax::SyntaxConfig;

/// Filters whose result is never much larger than their input.
pub const LIGHT_FILTERS: [&str; 29] = [
    "abs",
    "bool",
    "capitalize",
    "count",
    "d",
    "default",
    "e",
    "escape",
    "first",
    "float",
    "int",
    "items",
    "last",
    "length",
    "list",
    "lower",
    "max",
    "min",
    "reverse",
    "round",
    "safe",
    "sort",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
];

/// Light filters that may take arguments (bounded ones: a default, a precision, a key).
const FILTERS_WITH_ARGUMENTS: [&str; 5] = ["d", "default", "round", "sort", "trim"];

/// Words of the expression language that are not variables.
const KEYWORDS: [&str; 13] = [
    "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None",
];

/// More variable references than this make a template heavy: `~` and `+` could otherwise
/// repeat a large value thousands of times in one expression.
pub const MAX_LIGHT_REFERENCES: usize = 16;

/// What the tokens of a template say about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Weight {
    /// Why the template must render in the sandbox; `None` for a light template.
    pub heavy: Option<String>,
    /// Why the template's use of `secrets` is refused; `None` when it uses none or uses
    /// them as they are.
    pub secret_misuse: Option<String>,
}

/// Weighs a template (`in_expr: false`) or a bare expression (`in_expr: true`).
pub fn weigh(source: &str, in_expr: bool) -> Weight {
    let mut tokens = Vec::new();
    for token in tokenize(source, in_expr, SyntaxConfig::default()) {
        match token {
            Ok((token, _)) => tokens.push(token),
            // Syntax errors are reported when the template is compiled.
            Err(_) => {
                return Weight {
                    heavy: Some("it does not parse".into()),
                    secret_misuse: None,
                };
            }
        }
    }
    Weight {
        heavy: heavy_reason(&tokens),
        secret_misuse: secret_misuse(&tokens),
    }
}

fn heavy_reason(tokens: &[Token<'_>]) -> Option<String> {
    let mut references = 0;
    for (i, token) in tokens.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &tokens[p]);
        let next = tokens.get(i + 1);
        match token {
            Token::BlockStart => return Some("it has a {% %} statement".into()),
            Token::Mul | Token::Pow => return Some("it multiplies".into()),
            Token::Ident(name) if matches!(prev, Some(Token::Pipe)) => {
                if !LIGHT_FILTERS.contains(name) {
                    return Some(format!("it uses the filter {name:?}"));
                }
                if matches!(next, Some(Token::ParenOpen)) && !FILTERS_WITH_ARGUMENTS.contains(name)
                {
                    return Some(format!("it passes arguments to the filter {name:?}"));
                }
            }
            Token::Ident(_) if matches!(prev, Some(Token::Dot)) => {}
            Token::Ident(name) if matches!(prev, Some(Token::Ident("is"))) => {
                if matches!(next, Some(Token::ParenOpen)) {
                    return Some(format!("it passes arguments to the test {name:?}"));
                }
            }
            Token::Ident(name) if KEYWORDS.contains(name) => {}
            Token::Ident(name) => {
                if matches!(next, Some(Token::ParenOpen)) {
                    return Some(format!("it calls {name:?}"));
                }
                if matches!(next, Some(Token::Assign)) {
                    // A keyword argument's name.
                    continue;
                }
                references += 1;
                if references > MAX_LIGHT_REFERENCES {
                    return Some(format!(
                        "it reads more than {MAX_LIGHT_REFERENCES} variables"
                    ));
                }
            }
            _ => {}
        }
    }
    None
}

fn secret_misuse(tokens: &[Token<'_>]) -> Option<String> {
    if !tokens.iter().any(|t| matches!(t, Token::Ident("secrets"))) {
        return None;
    }
    let refused = tokens.iter().find(|t| {
        !matches!(
            t,
            Token::TemplateData(_)
                | Token::VariableStart
                | Token::VariableEnd
                | Token::Ident(_)
                | Token::Dot
                | Token::Str(_)
                | Token::String(_)
                | Token::Tilde
        )
    })?;
    Some(format!(
        "a template that reads secrets may only interpolate them as they are (text, ~ and \
         other variables), not use {refused}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heavy(source: &str) -> bool {
        weigh(source, false).heavy.is_some()
    }

    #[test]
    fn lookups_comparisons_and_bounded_filters_are_light() {
        for source in [
            "{{ context.user.name }}",
            "hello {{ context.who | upper }} from {{ run.id }}",
            "{{ steps.fetch.output.body['items'][0] | tojson }}",
            "{{ context.n + 1 }}",
            "{{ context.a ~ '-' ~ context.b }}",
            "{{ context.x | default('none') }}",
            "{{ steps.a.status == 'SUCCEEDED' and context.flag is defined }}",
        ] {
            assert!(!heavy(source), "{source}: {:?}", weigh(source, false));
        }
        assert!(
            weigh("steps.check.output.body.ok == true", true)
                .heavy
                .is_none()
        );
    }

    #[test]
    fn loops_calls_multiplication_and_other_filters_are_heavy() {
        for source in [
            "{% for i in range(100000) %}{% endfor %}",
            "{{ 'x' * 100000000 }}",
            "{{ range(10) | list }}",
            "{{ context.s | center(1000000000) }}",
            "{{ context.s | replace('a', 'bbbbbbbb') }}",
            "{{ context.items | join(', ') }}",
            "{{ context.v | tojson(indent=4) }}",
            "{% set s = 'x' %}{{ s }}",
        ] {
            assert!(heavy(source), "{source}");
        }
        let many = vec!["context.big"; MAX_LIGHT_REFERENCES + 1].join(" ~ ");
        assert!(weigh(&many, true).heavy.is_some());
    }

    #[test]
    fn secrets_may_only_be_interpolated_as_they_are() {
        for source in [
            "Bearer {{ secrets.API_KEY }}",
            "{{ 'Bearer ' ~ secrets.API_KEY }}",
            "{{ context.user }}:{{ secrets.PASSWORD }}",
        ] {
            assert_eq!(weigh(source, false).secret_misuse, None, "{source}");
        }
        for source in [
            "{{ secrets.API_KEY | upper }}",
            "{{ secrets.API_KEY | reverse }}",
            "{{ secrets.API_KEY[:12] }}",
            "{{ secrets.API_KEY | replace('-', '_') }}",
            "{{ (secrets.API_KEY ~ 'x') | lower }}",
            "{% for c in secrets.API_KEY %}{{ c }}{% endfor %}",
        ] {
            assert!(weigh(source, false).secret_misuse.is_some(), "{source}");
        }
    }
}
