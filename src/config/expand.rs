//! `${VAR}` and `${VAR:-default}` in every string value of the config file, expanded from
//! the environment before the file is read into its shapes.

/// A reference that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("unterminated ${{ in {0:?}")]
    Unterminated(String),
    #[error("bad variable reference ${{{reference}}} in {text:?}")]
    BadName { reference: String, text: String },
}

/// Expands `${VAR}` and `${VAR:-default}` in every string value; an unset variable without
/// a default expands to the empty string. A bare `$` is left alone, so values such as
/// passwords or patterns containing `$` survive unchanged.
pub fn expand_strings(
    value: &mut serde_yaml::Value,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(), ExpandError> {
    match value {
        serde_yaml::Value::String(s) => *s = expand(s, lookup)?,
        serde_yaml::Value::Sequence(items) => {
            for item in items {
                expand_strings(item, lookup)?;
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (_, item) in map.iter_mut() {
                expand_strings(item, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands the references in one string.
pub fn expand(
    input: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| ExpandError::Unterminated(input.to_owned()))?;
        let reference = &after[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ExpandError::BadName {
                reference: reference.to_owned(),
                text: input.to_owned(),
            });
        }
        match lookup(name) {
            Some(v) if !v.is_empty() || default.is_none() => out.push_str(&v),
            _ => out.push_str(default.unwrap_or("")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_dollar_is_not_an_expansion() {
        assert_eq!(
            expand("pa$$word $HOME", &|_| None).unwrap(),
            "pa$$word $HOME"
        );
    }

    #[test]
    fn defaults_apply_to_unset_and_empty_variables() {
        let lookup = |n: &str| (n == "EMPTY").then(String::new);
        assert_eq!(expand("${UNSET:-a}${EMPTY:-b}", &lookup).unwrap(), "ab");
        assert_eq!(expand("x${UNSET}y", &lookup).unwrap(), "xy");
    }

    #[test]
    fn malformed_references_are_refused() {
        assert!(matches!(
            expand("${OPEN", &|_| None),
            Err(ExpandError::Unterminated(_))
        ));
        assert!(matches!(
            expand("${A-B}", &|_| None),
            Err(ExpandError::BadName { .. })
        ));
    }
}
