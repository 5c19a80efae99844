//! Webhook deliveries: who may deliver (a signature or token checked in constant time),
//! what a template sees of the request, and the trigger's compiled `context` and `filter`.
//!
//! `context` and `filter` use the one expression language over `request.body` (the body
//! parsed as JSON, or its text when it is not JSON), `request.headers` (lower-case names)
//! and `request.query`. Nothing else is in scope: a template naming `secrets`, `context` or
//! any other root is refused when the trigger is created. So is a heavy template (one with
//! statements, loops or calls, see `crate::expr::weight`): a delivery renders in the
//! request's handler, in place and within `limits.template_fuel` and
//! `limits.template_bytes`, which only light templates are bounded to do quickly.

use std::collections::BTreeMap;

use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::expr::{Expr, ExprError, RequestScope, Template, to_scope_value};
use crate::problems::Violation;
use crate::secret::Secret;
use crate::store::SecretHeader;

/// Globals of the expression language that are not variables.
const FUNCTIONS: [&str; 4] = ["range", "dict", "debug", "namespace"];

/// Parts of header names whose values are never kept with a run: credentials and
/// signatures of the caller (`Authorization`, `Cookie`, `X-Gitlab-Token`,
/// `X-Hub-Signature-256`, `X-Api-Key`, …). Readers of the run must not learn them.
const HIDDEN_HEADER_PARTS: [&str; 8] = [
    "auth",
    "cookie",
    "token",
    "secret",
    "signature",
    "password",
    "api-key",
    "apikey",
];

fn hidden(header: &str) -> bool {
    HIDDEN_HEADER_PARTS.iter().any(|part| header.contains(part))
}

/// Checks a delivery's proof against the trigger's secret: an `X-Hub-Signature-256`
/// HMAC-SHA256 of the raw body (`sha256=<hex>`), or an `X-Gitlab-Token` equal to the
/// secret. Both comparisons take the same time whatever matched.
pub fn verify(secret: &Secret, scheme: SecretHeader, proof: Option<&str>, body: &[u8]) -> bool {
    let Some(proof) = proof.map(str::trim) else {
        return false;
    };
    match scheme {
        SecretHeader::HubSignature => {
            let Some(hex_sig) = proof.strip_prefix("sha256=") else {
                return false;
            };
            let Ok(given) = hex::decode(hex_sig) else {
                return false;
            };
            let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            else {
                return false;
            };
            mac.update(body);
            mac.verify_slice(&given).is_ok()
        }
        SecretHeader::GitlabToken => {
            let given = Sha256::digest(proof.as_bytes());
            let wanted = Sha256::digest(secret.expose().as_bytes());
            bool::from(given.as_slice().ct_eq(wanted.as_slice()))
        }
    }
}

/// The `X-Hub-Signature-256` value of `body` under `secret` (for tests and tools).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A delivery as templates see it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Lower-case names; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    pub query: Map<String, Value>,
    /// Parsed JSON, or the text when the body is not JSON (`null` when empty).
    pub body: Value,
    raw_len: usize,
}

impl Delivery {
    /// Reads a delivery from its headers, query string and raw body.
    pub fn new(
        headers: impl IntoIterator<Item = (String, String)>,
        query: &str,
        raw: &[u8],
    ) -> Self {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in headers {
            map.entry(name.to_ascii_lowercase())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let query = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        let body = if raw.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(raw)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()))
        };
        Self {
            headers: map,
            query,
            body,
            raw_len: raw.len(),
        }
    }

    /// The delivery id senders repeat on a redelivery: `X-GitHub-Delivery`,
    /// `X-Gitlab-Event-UUID` or `Idempotency-Key`.
    pub fn id(&self) -> Option<&str> {
        [
            "x-github-delivery",
            "x-gitlab-event-uuid",
            "idempotency-key",
        ]
        .iter()
        .find_map(|h| self.headers.get(*h))
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    }

    /// The template scope: `request.body`, `request.headers`, `request.query`.
    pub fn scope(&self) -> RequestScope {
        RequestScope {
            request: to_scope_value(
                &json!({"body": self.body, "headers": self.headers, "query": self.query}),
            ),
        }
    }

    /// The request as kept with the run: credentials hidden (in headers and query), the
    /// body cut to `limit` bytes of JSON (then kept as text, with `truncated: true`).
    pub fn kept(&self, limit: usize) -> Value {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), if hidden(k) { "***" } else { v.as_str() }))
            .collect();
        let query: Map<String, Value> = self
            .query
            .iter()
            .map(|(k, v)| {
                let hide = hidden(&k.to_ascii_lowercase());
                (k.clone(), if hide { json!("***") } else { v.clone() })
            })
            .collect();
        let text = self.body.to_string();
        let (body, truncated) = if text.len() <= limit {
            (self.body.clone(), false)
        } else {
            let mut end = limit;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (Value::String(text[..end].to_owned()), true)
        };
        let mut kept = json!({"headers": headers, "query": query, "body": body,
                              "body_bytes": self.raw_len});
        if truncated {
            kept["truncated"] = Value::Bool(true);
        }
        kept
    }
}

/// Why a delivery's context could not be made, and where in the trigger.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{pointer}: {source}")]
pub struct RenderError {
    /// The JSON pointer of the failing template in the trigger (`/context/sha`, `/filter`).
    pub pointer: String,
    #[source]
    pub source: ExprError,
}

/// A trigger's `context` templates and `filter`, compiled.
#[derive(Debug)]
pub struct Mapping {
    context: Option<Template>,
    filter: Option<Expr>,
}

impl Mapping {
    /// Compiles a trigger's `context` (an object of templates) and `filter`, refusing
    /// syntax errors and variables other than `request`, each at its pointer.
    pub fn compile(context: Option<&Value>, filter: Option<&str>) -> Result<Self, Vec<Violation>> {
        let mut violations = Vec::new();
        let context = match context {
            None => None,
            Some(value) if !value.is_object() => {
                violations.push(Violation::new(
                    "/context",
                    "context must be an object of templates",
                ));
                None
            }
            Some(value) => match Template::compile(value) {
                Ok(t) => {
                    check_refs("/context", t.references(), &mut violations);
                    for (at, weight) in t.weights() {
                        if let Some(why) = weight.heavy {
                            violations.push(Violation::new(format!("/context{at}"), heavy(&why)));
                        }
                    }
                    Some(t)
                }
                Err((at, e)) => {
                    violations.push(Violation::new(format!("/context{at}"), e.to_string()));
                    None
                }
            },
        };
        let filter = match filter {
            None => None,
            Some(text) => match Expr::compile(text) {
                Ok(e) => {
                    let refs = e
                        .references()
                        .into_iter()
                        .map(|r| (String::new(), r))
                        .collect();
                    check_refs("/filter", refs, &mut violations);
                    if let Some(why) = &e.weight().heavy {
                        violations.push(Violation::new("/filter", heavy(why)));
                    }
                    Some(e)
                }
                Err(e) => {
                    violations.push(Violation::new("/filter", e.to_string()));
                    None
                }
            },
        };
        if violations.is_empty() {
            Ok(Self { context, filter })
        } else {
            Err(violations)
        }
    }

    /// True when the delivery passes the filter (undefined counts as false).
    pub fn passes(&self, delivery: &Delivery) -> Result<bool, RenderError> {
        match &self.filter {
            None => Ok(true),
            Some(f) => f.is_true(&delivery.scope()).map_err(|source| RenderError {
                pointer: "/filter".into(),
                source,
            }),
        }
    }

    /// The run context rendered from the delivery (empty without a `context`).
    pub fn render(&self, delivery: &Delivery) -> Result<Map<String, Value>, RenderError> {
        let Some(Template::Object(fields)) = &self.context else {
            return match &self.context {
                Some(t) => match t.render(&delivery.scope()) {
                    Ok(Value::Object(map)) => Ok(map),
                    _ => Ok(Map::new()),
                },
                None => Ok(Map::new()),
            };
        };
        let scope = delivery.scope();
        let mut out = Map::new();
        for (key, template) in fields {
            let value = template.render(&scope).map_err(|source| RenderError {
                pointer: format!("/context/{}", crate::expr::escape_pointer(key)),
                source,
            })?;
            out.insert(key.clone(), value);
        }
        Ok(out)
    }
}

fn heavy(why: &str) -> String {
    format!(
        "trigger templates must be light (they render while the delivery waits): {why}; \
         pick values out of request.body, request.headers and request.query, and leave \
         heavier work to the workflow's steps"
    )
}

fn check_refs(base: &str, refs: Vec<(String, String)>, out: &mut Vec<Violation>) {
    for (at, reference) in refs {
        let root = reference.split('.').next().unwrap_or_default();
        if root != "request" && !FUNCTIONS.contains(&root) {
            out.push(Violation::new(
                format!("{base}{at}"),
                format!(
                    "unknown variable {root:?}; trigger templates read request.body, \
                     request.headers and request.query only"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(body: &str) -> Delivery {
        Delivery::new(
            [
                ("X-GitHub-Event".to_owned(), "push".to_owned()),
                ("X-GitHub-Delivery".to_owned(), "d-1".to_owned()),
                ("Authorization".to_owned(), "Bearer t".to_owned()),
                ("X-Api-Key".to_owned(), "k-123".to_owned()),
                ("X-Hub-Signature".to_owned(), "sha1=abc".to_owned()),
            ],
            "env=prod&x=%20y&access_token=t0",
            body.as_bytes(),
        )
    }

    #[test]
    fn hub_signatures_are_checked_over_the_raw_body() {
        let secret = Secret::new("It's a Secret to Everybody");
        // GitHub's documented example.
        let body = b"Hello, World!";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret.expose(), body), sig);
        assert!(verify(&secret, SecretHeader::HubSignature, Some(sig), body));
        for wrong in [
            None,
            Some(""),
            Some("sha256=00"),
            Some(&sig[7..]),
            Some("sha1=757107ea"),
        ] {
            assert!(
                !verify(&secret, SecretHeader::HubSignature, wrong, body),
                "{wrong:?}"
            );
        }
        assert!(!verify(
            &secret,
            SecretHeader::HubSignature,
            Some(sig),
            b"Hello, World?"
        ));
    }

    #[test]
    fn gitlab_tokens_must_equal_the_secret() {
        let secret = Secret::new("gl-token-123");
        assert!(verify(
            &secret,
            SecretHeader::GitlabToken,
            Some("gl-token-123"),
            b"{}"
        ));
        assert!(!verify(
            &secret,
            SecretHeader::GitlabToken,
            Some("gl-token-12"),
            b"{}"
        ));
        assert!(!verify(&secret, SecretHeader::GitlabToken, None, b"{}"));
    }

    #[test]
    fn templates_read_body_headers_and_query() {
        let mapping = Mapping::compile(
            Some(&json!({"event": "{{ request.headers['x-github-event'] }}",
                         "ref": "{{ request.body.ref }}", "env": "{{ request.query.env }}",
                         "fixed": 1})),
            Some("request.body.ref == 'refs/heads/main'"),
        )
        .unwrap();
        let d = delivery(r#"{"ref": "refs/heads/main"}"#);
        assert!(mapping.passes(&d).unwrap());
        assert_eq!(
            Value::Object(mapping.render(&d).unwrap()),
            json!({"event": "push", "ref": "refs/heads/main", "env": "prod", "fixed": 1})
        );
        assert!(
            !mapping
                .passes(&delivery(r#"{"ref": "refs/heads/dev"}"#))
                .unwrap()
        );
        assert_eq!(d.id(), Some("d-1"));
    }

    #[test]
    fn a_body_that_is_not_json_is_its_text() {
        let d = delivery("plain text, not JSON");
        assert_eq!(d.body, json!("plain text, not JSON"));
        let mapping = Mapping::compile(Some(&json!({"text": "{{ request.body }}"})), None).unwrap();
        assert_eq!(mapping.render(&d).unwrap()["text"], "plain text, not JSON");
    }

    #[test]
    fn a_failed_render_names_the_template_pointer() {
        let mapping = Mapping::compile(
            Some(&json!({"a/b": "{{ request.body.missing.deeper }}"})),
            None,
        )
        .unwrap();
        let err = mapping.render(&delivery("{}")).unwrap_err();
        assert_eq!(err.pointer, "/context/a~1b");
    }

    #[test]
    fn syntax_errors_and_other_variables_are_refused_at_their_pointer() {
        let errors = Mapping::compile(
            Some(
                &json!({"ok": "{{ request.body }}", "bad": "{{ request.body.x ==  }}",
                         "secret": "{{ secrets.TOKEN }}"}),
            ),
            Some("context.x"),
        )
        .unwrap_err();
        let pointers: Vec<&str> = errors.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["/context/bad", "/filter"]);
        let errors =
            Mapping::compile(Some(&json!({"secret": "{{ secrets.TOKEN }}"})), None).unwrap_err();
        assert_eq!(errors[0].pointer, "/context/secret");
        assert!(Mapping::compile(Some(&json!(["x"])), None).is_err());
        let errors = Mapping::compile(
            Some(&json!({"loop": "{% for x in request.body %}{{ x }}{% endfor %}"})),
            Some("range(100000) | length > 0"),
        )
        .unwrap_err();
        let pointers: Vec<&str> = errors.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["/context/loop", "/filter"], "{errors:?}");
    }

    #[test]
    fn kept_requests_hide_credentials_and_cut_large_bodies() {
        let d = delivery(&format!(r#"{{"blob": "{}"}}"#, "x".repeat(100)));
        let kept = d.kept(1024);
        for credential in ["authorization", "x-api-key", "x-hub-signature"] {
            assert_eq!(kept["headers"][credential], "***", "{credential}");
        }
        assert_eq!(kept["headers"]["x-github-delivery"], "d-1");
        assert_eq!(
            kept["query"],
            json!({"env": "prod", "x": " y", "access_token": "***"})
        );
        assert_eq!(kept["headers"]["x-github-event"], "push");
        assert!(kept.get("truncated").is_none());
        let cut = d.kept(20);
        assert_eq!(cut["truncated"], true);
        assert_eq!(cut["body"].as_str().unwrap().len(), 20);
    }
}
