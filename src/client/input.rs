//! Values given on the command line: JSON inline, or `@FILE` (JSON or YAML), or `@-`.

use std::path::Path;

use serde_json::Value;

use super::http::ClientError;

/// A flag's JSON value, given inline or as `@FILE` (YAML by its extension; `@-` is stdin).
pub fn json_argument(flag: &str, value: &str) -> Result<Value, ClientError> {
    let usage = |what: String| ClientError::Usage(format!("{flag}: {what}"));
    let Some(file) = value.strip_prefix('@') else {
        return serde_json::from_str(value).map_err(|e| usage(format!("not JSON: {e}")));
    };
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| usage(format!("cannot read {file}: {e}")))?;
    let yaml = matches!(
        Path::new(file).extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    if yaml {
        serde_yaml::from_str(&text).map_err(|e| usage(format!("{file}: not YAML: {e}")))
    } else {
        serde_json::from_str(&text).map_err(|e| usage(format!("{file}: not JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_arguments_are_inline_or_read_from_a_file() {
        assert_eq!(
            json_argument("--data", r#"{"a": 1}"#).unwrap(),
            json!({"a": 1})
        );
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("ctx.yaml");
        std::fs::write(&yaml, "who: ada\nn: 2\n").unwrap();
        let arg = format!("@{}", yaml.display());
        assert_eq!(
            json_argument("--context", &arg).unwrap(),
            json!({"who": "ada", "n": 2})
        );
        let err = json_argument("--context", "{nope").unwrap_err();
        assert!(
            matches!(&err, ClientError::Usage(m) if m.starts_with("--context: not JSON")),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
    }
}
