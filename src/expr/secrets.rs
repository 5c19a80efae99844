//! `secrets.NAME` in templates, and the [`Redactor`] that keeps the values read out of
//! everything the engine stores or logs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use minijinja::value::{Object, Value as MjValue};
use serde_json::Value;

use crate::secret::Secret;

/// `secrets.NAME`: the server's environment variable `NAME`, else config `secrets.NAME`.
/// Values read are remembered so that they can be redacted from what is stored.
#[derive(Debug, Default)]
pub struct Secrets {
    configured: Arc<BTreeMap<String, Secret>>,
    used: Mutex<BTreeSet<String>>,
}

impl Secrets {
    /// A fresh reader over config `secrets` (the environment is consulted first).
    pub fn new(configured: Arc<BTreeMap<String, Secret>>) -> Self {
        Self {
            configured,
            used: Mutex::default(),
        }
    }

    /// A redactor for every secret value read so far.
    pub fn redactor(&self) -> Redactor {
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        Redactor::new(used)
    }

    fn lookup(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.configured.get(name).map(|s| s.expose().to_owned()))
    }
}

impl Object for Secrets {
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        let value = self.lookup(key.as_str()?)?;
        if let Ok(mut used) = self.used.lock() {
            used.insert(value.clone());
        }
        Some(MjValue::from(value))
    }
}

/// Replaces secret values with `***` wherever they appear.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn new(secrets: BTreeSet<String>) -> Self {
        // Longest first, so a secret containing another is replaced whole.
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced.
    pub fn redact_str(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
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
