//! The store's lifecycle settings: this server's identity (`server.id`) and retention
//! (`retention:`).

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::BadValue;
use super::raw::RawRetention;
use super::sections::StoreConfig;

/// How long finished runs and acknowledged hook events are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionSettings {
    /// Finished runs older than this are deleted; `None` keeps them all.
    pub runs: Option<Duration>,
    /// Acknowledged hook events older than this are deleted; `None` keeps them all.
    pub hook_events: Option<Duration>,
    /// How often retention looks for what to delete.
    pub interval: Duration,
}

impl RetentionSettings {
    pub(super) fn from_raw(raw: &RawRetention) -> Result<Self, BadValue> {
        if raw.interval < Duration::from_millis(100) {
            return Err(BadValue::new(
                "retention.interval",
                "must be at least 100ms",
            ));
        }
        let kept = |d: Duration| (!d.is_zero()).then_some(d);
        Ok(Self {
            runs: kept(raw.runs),
            hook_events: kept(raw.hook_events),
            interval: raw.interval,
        })
    }
}

/// `server.id` as configured, or derived from the host name and the store: stable across
/// restarts of one server on one host and data, different for two stores or two hosts.
pub(super) fn server_id(configured: &str, store: &StoreConfig) -> Result<String, BadValue> {
    let id = configured.trim();
    if id.is_empty() {
        return Ok(derived_id(&host_name(), store));
    }
    let valid = id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !valid {
        return Err(BadValue::new(
            "server.id",
            "1 to 64 letters, digits and - _ . : (or empty to derive one)",
        ));
    }
    Ok(id.to_owned())
}

/// `<host>-<8 hex digits of the store's location>`.
fn derived_id(host: &str, store: &StoreConfig) -> String {
    let location = match store {
        StoreConfig::Sqlite { path, .. } => {
            let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            format!("sqlite:{}", absolute.display())
        }
        StoreConfig::Postgres { dsn, .. } => {
            // The password is no part of where the data is.
            match url::Url::parse(dsn.expose()) {
                Ok(mut url) => {
                    let _ = url.set_password(None);
                    format!("postgres:{url}")
                }
                Err(_) => format!("postgres:{}", dsn.expose()),
            }
        }
    };
    let digest = Sha256::digest(location.as_bytes());
    format!("{host}-{}", hex::encode(&digest[..4]))
}

/// The host's name, reduced to the characters an id may hold.
fn host_name() -> String {
    let raw = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(Path::new(p)).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::secret::Secret;
    use crate::store::sqlite::SqliteOptions;

    fn sqlite(path: &str) -> StoreConfig {
        StoreConfig::Sqlite {
            path: PathBuf::from(path),
            options: SqliteOptions {
                synchronous_full: false,
                read_connections: 1,
                wal_max_bytes: 1 << 20,
            },
        }
    }

    fn postgres(dsn: &str) -> StoreConfig {
        StoreConfig::Postgres {
            dsn: Secret::new(dsn),
            pool_size: 2,
            statement_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_derived_id_is_stable_per_host_and_store_and_ignores_the_password() {
        let a = derived_id("web-1", &sqlite("/data/a.db"));
        assert_eq!(a, derived_id("web-1", &sqlite("/data/a.db")));
        assert!(
            a.starts_with("web-1-") && a.len() == "web-1-".len() + 8,
            "{a}"
        );
        assert_ne!(a, derived_id("web-1", &sqlite("/data/b.db")));
        assert_ne!(a, derived_id("web-2", &sqlite("/data/a.db")));
        assert_eq!(
            derived_id("h", &postgres("postgres://u:one@db/orch")),
            derived_id("h", &postgres("postgres://u:two@db/orch"))
        );
        assert_ne!(
            derived_id("h", &postgres("postgres://u@db/orch")),
            derived_id("h", &postgres("postgres://u@db/other"))
        );
    }

    #[test]
    fn a_configured_id_is_kept_when_valid() {
        let store = sqlite("x.db");
        assert_eq!(server_id(" node-a ", &store).unwrap(), "node-a");
        assert!(
            server_id("", &store)
                .unwrap()
                .ends_with(&derived_id("", &store)[1..])
        );
        let err = server_id("has space", &store).unwrap_err();
        assert_eq!(err.key, "server.id");
    }
}
