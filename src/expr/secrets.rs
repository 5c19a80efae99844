//! `secrets.NAME` in templates, and the [`Redactor`] that keeps secrets out of everything
//! the engine stores or logs.
//!
//! Only secrets declared under `secrets:` in the config resolve (never the server's
//! environment). Redaction masks every declared secret of at least [`MIN_MASKED_LEN`]
//! characters wherever it appears, in its plain form and in the forms a downstream is
//! likely to echo it in: base64 (standard and URL-safe, at any alignment inside a longer
//! encoding), URL-encoded, and hex. Shorter values are never masked: masking `root` would
//! turn every `/root` in an output into `/***`.

use std::collections::BTreeMap;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use minijinja::value::{Object, Value as MjValue};
use serde_json::Value;

use crate::secret::Secret;

/// Secrets shorter than this are not masked (too likely to match ordinary text).
pub const MIN_MASKED_LEN: usize = 8;

/// What a masked secret becomes.
const MASK: &str = "***";

/// `secrets.NAME` in templates: the declared secrets, by name.
#[derive(Debug, Default)]
pub struct Secrets {
    declared: Arc<BTreeMap<String, Secret>>,
}

impl Secrets {
    pub fn new(declared: Arc<BTreeMap<String, Secret>>) -> Self {
        Self { declared }
    }
}

impl Object for Secrets {
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        let secret = self.declared.get(key.as_str()?)?;
        Some(MjValue::from(secret.expose()))
    }
}

/// Replaces secrets, and their common encodings, with `***` wherever they appear.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    matcher: Option<Arc<AhoCorasick>>,
}

impl Redactor {
    /// A redactor for every secret of `declared` long enough to mask.
    pub fn new<'a>(declared: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut patterns: Vec<String> = declared
            .into_iter()
            .map(Secret::expose)
            .filter(|s| s.chars().count() >= MIN_MASKED_LEN)
            .flat_map(forms)
            .filter(|form| form.len() >= MIN_MASKED_LEN)
            .collect();
        patterns.sort();
        patterns.dedup();
        if patterns.is_empty() {
            return Self::default();
        }
        // Leftmost-longest: a secret containing another is replaced whole.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok()
            .map(Arc::new);
        Self { matcher }
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every secret replaced.
    pub fn redact_str(&self, text: &str) -> String {
        match &self.matcher {
            Some(m) if m.is_match(text) => m.replace_all(text, &vec![MASK; m.patterns_len()]),
            _ => text.to_owned(),
        }
    }

    /// Redacts every string (keys included) under `value`.
    pub fn redact(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => *s = self.redact_str(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact(v)),
            Value::Object(map) => {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    self.redact(&mut v);
                    map.insert(self.redact_str(&k), v);
                }
            }
            _ => {}
        }
    }
}

/// The forms of a secret that are masked: itself, URL-encoded, hex, and base64 at each
/// alignment (the part of the encoding that depends only on the secret's bytes).
fn forms(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut out = vec![
        secret.to_owned(),
        url::form_urlencoded::byte_serialize(bytes).collect(),
        percent_encoded(bytes),
        hex::encode(bytes),
        hex::encode_upper(bytes),
    ];
    for offset in 0..3 {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(bytes);
        for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&padded);
            // Characters mixing the padding bytes, or the bytes after the secret, differ
            // in a longer encoding: keep the stable middle.
            let skip_front = if offset == 0 { 0 } else { 4 };
            let whole_groups = (padded.len() / 3) * 4;
            if whole_groups > skip_front {
                out.push(encoded[skip_front..whole_groups].to_owned());
            }
        }
    }
    out
}

/// Every byte outside `A-Za-z0-9-._~` as `%XX` (what a URL path or query carries).
fn percent_encoded(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(values: &[&str]) -> Redactor {
        let secrets: Vec<Secret> = values.iter().map(|v| Secret::new(*v)).collect();
        Redactor::new(&secrets)
    }

    #[test]
    fn secrets_and_their_encodings_are_masked_anywhere() {
        let key = "sk-live/0123456789+abc";
        let r = redactor(&[key]);
        let basic = STANDARD_NO_PAD.encode(format!("user:{key}"));
        for text in [
            format!("token {key} end"),
            format!(
                "?key={}",
                url::form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>()
            ),
            format!("hex {}", hex::encode(key)),
            format!("HEX {}", hex::encode_upper(key)),
            format!("Basic {basic}"),
            format!("raw {}", URL_SAFE_NO_PAD.encode(key)),
        ] {
            let out = r.redact_str(&text);
            assert!(out.contains("***"), "{text} → {out}");
            assert!(!out.contains(key), "{out}");
        }
    }

    #[test]
    fn short_values_are_never_masked() {
        let r = redactor(&["root", "12345"]);
        assert!(r.is_empty());
        assert_eq!(r.redact_str("/root/12345"), "/root/12345");
    }

    #[test]
    fn keys_and_nested_values_are_redacted() {
        let r = redactor(&["supersecretvalue"]);
        let mut v = serde_json::json!({"supersecretvalue": ["a supersecretvalue b"]});
        r.redact(&mut v);
        assert_eq!(v, serde_json::json!({"***": ["a *** b"]}));
    }

    #[test]
    fn only_declared_secrets_resolve() {
        let declared = Arc::new(BTreeMap::from([(
            "API_KEY".to_owned(),
            Secret::new("key-value-123"),
        )]));
        let secrets = Arc::new(Secrets::new(declared));
        assert_eq!(
            secrets.get_value(&MjValue::from("API_KEY")),
            Some(MjValue::from("key-value-123"))
        );
        assert_eq!(secrets.get_value(&MjValue::from("HOME")), None);
    }
}
