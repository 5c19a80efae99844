//! Request bodies: JSON, or YAML with `Content-Type: application/yaml`, read up to the
//! configured limit (`413` beyond it) and parsed into a JSON value (`400` with the line and
//! column when malformed).

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest, web};
use futures::StreamExt;
use futures::future::LocalBoxFuture;
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use crate::definition::{Invalid, parse_document};

/// A parsed JSON or YAML request body.
#[derive(Debug, Clone)]
pub struct Document(pub Value);

/// YAML when the Content-Type says so; anything else is read as JSON, like the Go service
/// did (so `curl -d '{…}'` without a header works).
fn is_yaml(req: &HttpRequest) -> bool {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        mime.as_str(),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
    )
}

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read_limited(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge(limit));
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request("", format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn limit(req: &HttpRequest) -> usize {
    req.app_data::<web::Data<AppState>>()
        .map(|s| s.limits.body_bytes)
        .unwrap_or(1024 * 1024)
}

impl FromRequest for Document {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let yaml = is_yaml(&req);
            let bytes = read_limited(&req, &mut payload, limit(&req)).await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Self(Value::Null));
            }
            let value =
                parse_document(&bytes, yaml).map_err(|e| with_yaml_hint(e, &bytes, yaml))?;
            match nul_at(&value, String::new()) {
                Some(at) => Err(ApiError::bad_request(
                    &at,
                    "holds a NUL character (U+0000), which cannot be stored",
                )),
                None => Ok(Self(value)),
            }
        })
    }
}

/// The JSON pointer of the first string or key under `value` (at `at`) holding NUL.
fn nul_at(value: &Value, at: String) -> Option<String> {
    let token = |key: &str| format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
    match value {
        Value::String(s) => s.contains('\0').then_some(at),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_at(v, format!("{at}/{i}"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(token(k))
            } else {
                nul_at(v, token(k))
            }
        }),
        _ => None,
    }
}

/// A JSON syntax error gets a hint when the body reads as a YAML mapping or list: it was
/// most likely YAML sent without `Content-Type: application/yaml`.
fn with_yaml_hint(mut error: Invalid, bytes: &[u8], yaml: bool) -> Invalid {
    let starts_like_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    // Parsed as YAML only when it cannot be JSON gone wrong (that would cost a second parse
    // of every broken JSON body).
    let reads_as_yaml = || {
        matches!(
            serde_yaml::from_slice::<Value>(bytes),
            Ok(Value::Object(_) | Value::Array(_))
        )
    };
    if !yaml && !starts_like_json && reads_as_yaml() {
        for violation in &mut error.violations {
            violation
                .message
                .push_str(" (the body reads as YAML: send it with Content-Type: application/yaml)");
        }
    }
    error
}

impl Document {
    /// The body as an object; an empty body is an empty object.
    pub fn into_object(self) -> Result<serde_json::Map<String, Value>, ApiError> {
        match self.0 {
            Value::Object(map) => Ok(map),
            Value::Null => Ok(Default::default()),
            _ => Err(ApiError::bad_request(
                "",
                "the request body must be a JSON object",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str, yaml: bool) -> String {
        let error = parse_document(body.as_bytes(), yaml).unwrap_err();
        with_yaml_hint(error, body.as_bytes(), yaml).violations[0]
            .message
            .clone()
    }

    #[test]
    fn the_first_nul_is_found_by_its_pointer_in_values_and_keys() {
        let body = serde_json::json!({"a": [1, "ok", {"b/c": "x\u{0}y"}], "z": "fine"});
        assert_eq!(nul_at(&body, String::new()).as_deref(), Some("/a/2/b~1c"));
        let key = serde_json::json!({"ok": {"k\u{0}": 1}});
        assert_eq!(nul_at(&key, String::new()).as_deref(), Some("/ok/k\u{0}"));
        assert_eq!(nul_at(&serde_json::json!({"a": "b"}), String::new()), None);
    }

    #[test]
    fn yaml_sent_as_json_is_told_to_say_so() {
        let yaml = "name: greet\nsteps:\n  - name: hello\n    action: transform\n";
        let text = message(yaml, false);
        assert!(text.starts_with("invalid JSON"), "{text}");
        assert!(text.contains("Content-Type: application/yaml"), "{text}");
    }

    #[test]
    fn broken_json_and_plain_text_get_no_yaml_hint() {
        assert!(!message("{\"name\": \"x\",}", false).contains("YAML"));
        assert!(!message("hello there", false).contains("YAML"));
    }
}
