//! Sizes of JSON values, and the marker that stands in for an output too large to keep.
//!
//! An output larger than `limits.max_output_bytes` is never stored whole. If it is an
//! object with a `body` (the `{status, headers, body}` of network actions) and replacing
//! the body alone makes it fit, only `body` becomes the marker; otherwise the whole output
//! does. The marker is `{"truncated": true, "original_bytes": N, "preview": "…"}`, where
//! `preview` is the start of the replaced value (a string's own text, else its JSON).

use serde::Serialize;
use serde_json::{Value, json};

/// The default of `limits.max_output_bytes`: outputs (and response bodies) kept whole.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// The longest preview a marker carries.
pub const PREVIEW_BYTES: usize = 1024;

/// Bytes of `value` as compact JSON, counted without building the text.
pub fn json_len(value: &impl Serialize) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and JSON values have string keys.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Collects at most `limit` bytes, then refuses more (which stops the serialiser).
struct Prefix {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Prefix {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.limit - self.bytes.len();
        if room == 0 {
            return Err(std::io::Error::other("preview full"));
        }
        let n = buf.len().min(room);
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The first `max` bytes of `text`, cut back to a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The first `max` bytes of bytes that should be UTF-8, cut back to a character boundary
/// (invalid sequences are replaced).
pub fn cut_bytes(bytes: &[u8], max: usize) -> String {
    let bytes = &bytes[..bytes.len().min(max)];
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(e) if e.error_len().is_none() => {
            String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// The start of `value` for a marker: a string's text, else its JSON.
fn preview_of(value: &Value, max: usize) -> String {
    if let Value::String(text) = value {
        return cut(text, max).to_owned();
    }
    let mut prefix = Prefix {
        bytes: Vec::with_capacity(max),
        limit: max,
    };
    let _ = serde_json::to_writer(&mut prefix, value);
    cut_bytes(&prefix.bytes, max)
}

/// The marker that replaces a value of `original_bytes` bytes.
pub fn marker(original_bytes: u64, preview: String) -> Value {
    json!({"truncated": true, "original_bytes": original_bytes, "preview": preview})
}

/// `original_bytes` when `value` is a marker.
pub fn marker_size(value: &Value) -> Option<u64> {
    let map = value.as_object()?;
    if map.len() != 3
        || map.get("truncated") != Some(&Value::Bool(true))
        || !map.get("preview").is_some_and(Value::is_string)
    {
        return None;
    }
    map.get("original_bytes")?.as_u64()
}

/// Where an output was cut, and how large the replaced value was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Body(u64),
    Whole(u64),
}

impl Cut {
    /// The cut an output shows, if it holds a marker (made here or by the HTTP client).
    pub fn found_in(output: &Value) -> Option<Self> {
        if let Some(n) = marker_size(output) {
            return Some(Self::Whole(n));
        }
        output.get("body").and_then(marker_size).map(Self::Body)
    }
}

/// Makes `output` fit in `limit` bytes (see the module documentation); `None` when it
/// already fits and is left alone.
pub fn fit(output: &mut Value, limit: usize) -> Option<Cut> {
    let total = json_len(output);
    if total <= limit {
        return None;
    }
    let preview = PREVIEW_BYTES.min(limit / 4);
    if let Value::Object(map) = output
        && let Some(body) = map.get_mut("body")
    {
        let body_len = json_len(body);
        let replacement = marker(body_len as u64, preview_of(body, preview));
        if total - body_len + json_len(&replacement) <= limit {
            *body = replacement;
            return Some(Cut::Body(body_len as u64));
        }
    }
    *output = marker(total as u64, preview_of(output, preview));
    Some(Cut::Whole(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_those_of_compact_json() {
        let v = json!({"a": [1, "é"], "b": null});
        assert_eq!(json_len(&v), serde_json::to_string(&v).unwrap().len());
    }

    #[test]
    fn outputs_that_fit_are_left_alone() {
        let mut v = json!({"status": 200, "body": "small"});
        assert_eq!(fit(&mut v, 1024), None);
        assert_eq!(v["body"], "small");
    }

    #[test]
    fn a_large_body_alone_is_replaced_keeping_status_and_headers() {
        let big = "é".repeat(3000);
        let mut v = json!({"status": 200, "headers": {"x": "y"}, "body": big});
        let body_len = json_len(&v["body"]) as u64;
        assert_eq!(fit(&mut v, 2048), Some(Cut::Body(body_len)));
        assert_eq!(v["status"], 200);
        assert_eq!(v["headers"]["x"], "y");
        assert_eq!(v["body"]["truncated"], true);
        assert_eq!(v["body"]["original_bytes"], body_len);
        let preview = v["body"]["preview"].as_str().unwrap();
        assert!(
            preview.len() <= 512 && preview.starts_with('é'),
            "{preview}"
        );
        assert!(json_len(&v) <= 2048);
        assert_eq!(Cut::found_in(&v), Some(Cut::Body(body_len)));
    }

    #[test]
    fn an_output_without_a_body_is_replaced_whole() {
        let mut v = json!({"items": vec![1; 5000]});
        let total = json_len(&v) as u64;
        assert_eq!(fit(&mut v, 4096), Some(Cut::Whole(total)));
        assert_eq!(v["original_bytes"], total);
        assert!(
            v["preview"]
                .as_str()
                .unwrap()
                .starts_with("{\"items\":[1,1")
        );
        assert_eq!(Cut::found_in(&v), Some(Cut::Whole(total)));
    }

    #[test]
    fn byte_prefixes_end_at_character_boundaries() {
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut_bytes("aé".as_bytes(), 2), "a");
        assert_eq!(cut_bytes(b"ab", 10), "ab");
    }
}
