//! Details added to run log messages so that a failed run can be debugged from its log
//! alone: the HTTP status and the start of what a downstream answered.

use serde_json::Value;

/// The longest excerpt of a downstream's answer written to the run log.
const EXCERPT_CHARS: usize = 300;

/// The start of the body a failed call answered (text as is, JSON compact), for the log.
pub fn response_excerpt(output: &Value) -> Option<String> {
    let text = match output.get("body")? {
        Value::Null => return None,
        Value::String(s) if s.trim().is_empty() => return None,
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    };
    let mut excerpt: String = text.chars().take(EXCERPT_CHARS).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    Some(excerpt)
}

/// ` (HTTP 503)` when the error text does not already say so.
pub fn http_note(code: Option<u16>, error: Option<&str>) -> String {
    match code {
        Some(c) if !error.is_some_and(|e| e.contains(&format!("HTTP {c}"))) => {
            format!(" (HTTP {c})")
        }
        _ => String::new(),
    }
}

/// `; response: …` when there is a response excerpt.
pub fn response_note(response: Option<&str>) -> String {
    response
        .map(|text| format!("; response: {text}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn excerpts_show_the_start_of_text_or_compact_json_bodies() {
        let json_body = json!({"status": 503, "body": {"error": "busy"}});
        assert_eq!(response_excerpt(&json_body).unwrap(), r#"{"error":"busy"}"#);
        let long = json!({"body": "x".repeat(1000)});
        let excerpt = response_excerpt(&long).unwrap();
        assert_eq!(excerpt.chars().count(), EXCERPT_CHARS + 1);
        assert!(excerpt.ends_with('…'));
        assert_eq!(response_excerpt(&json!({"body": null})), None);
        assert_eq!(response_excerpt(&json!({"body": "  "})), None);
    }

    #[test]
    fn the_http_status_is_added_only_when_the_error_does_not_say_it() {
        assert_eq!(http_note(Some(503), Some("GET /x: HTTP 503")), "");
        assert_eq!(http_note(Some(422), Some("invalid JSON")), " (HTTP 422)");
        assert_eq!(http_note(None, Some("timed out")), "");
    }
}
