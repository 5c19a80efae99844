//! Server configuration: `config.yaml`, `${VAR}` expansion and `ORCHESTRATOR_…` overrides.
//!
//! Loading happens in two stages. The file is parsed as YAML, every string value has its
//! `${VAR}` / `${VAR:-default}` references expanded ([`expand`]), environment overrides are
//! merged on top (`ORCHESTRATOR_SERVER__PORT=9000` sets `server.port`), and the result is
//! read into the serde shapes of [`raw`] (unknown keys are errors). [`Config::from_raw`]
//! then checks every value and builds the typed sections of [`sections`], which are all
//! the rest of the server sees; a `Config` is always valid. Secrets (tokens, service
//! headers, declared `secrets:`) are held as [`Secret`], which never prints.

mod auth;
mod expand;
mod lifecycle;
pub mod raw;
mod sections;
mod triggers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Env, Serialized};

use crate::outbound::{OutboundPolicy, PolicyError};
use crate::secret::Secret;

pub use auth::{ApiToken, Role, token_digest};
pub use expand::ExpandError;
pub use lifecycle::RetentionSettings;
pub use raw::{RawConfig, RawToken};
pub use sections::{
    EngineSettings, HookSettings, LogConfig, RunLogSettings, ServerLimits, ServerSettings,
    ServiceSection, Services, StoreConfig,
};
pub use triggers::TriggerSettings;

/// Prefix of environment variables that override config keys; `__` separates levels.
pub const ENV_PREFIX: &str = "ORCHESTRATOR_";

/// Variables with [`ENV_PREFIX`] that belong to the command-line client
/// (`ORCHESTRATOR_URL`, `ORCHESTRATOR_TOKEN`), not to the server's configuration.
pub const CLIENT_VARIABLES: [&str; 2] = ["URL", "TOKEN"];

/// A value the configuration may not have: its key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct BadValue {
    pub key: String,
    pub message: String,
}

impl BadValue {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl From<PolicyError> for BadValue {
    fn from(e: PolicyError) -> Self {
        Self::new(format!("{}[{}]", e.key, e.index), e.source.to_string())
    }
}

/// Why the configuration could not be loaded. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: malformed YAML: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{path}: {source}")]
    Expand { path: PathBuf, source: ExpandError },
    /// The file's shape: an unknown key, a value of the wrong type.
    #[error("{path}: {message}")]
    Shape { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Value { path: PathBuf, source: BadValue },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub source: PathBuf,
    pub server: ServerSettings,
    pub store: StoreConfig,
    pub workflow_schema: Option<PathBuf>,
    pub requires_approval: bool,
    /// Where network actions may call.
    pub outbound: Arc<OutboundPolicy>,
    pub templates_path: Option<PathBuf>,
    pub engine: EngineSettings,
    pub limits: ServerLimits,
    pub log: LogConfig,
    /// Run logs (client appends, SSE streaming).
    pub logs: RunLogSettings,
    /// Declared secrets (`secrets:`), by name.
    pub secrets: BTreeMap<String, Secret>,
    pub services: Services,
    pub hooks: HookSettings,
    /// Cron schedules and webhook triggers.
    pub triggers: TriggerSettings,
    /// API tokens; empty: no authentication.
    pub auth: Vec<ApiToken>,
    /// How long finished runs and delivered hook events are kept.
    pub retention: RetentionSettings,
}

impl Config {
    /// Reads `path`, expands `${VAR}`, applies `ORCHESTRATOR_…` overrides and checks the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(path, &text, |name| std::env::var(name).ok())
    }

    /// Defaults plus environment overrides, for commands run without a config file.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_yaml(Path::new("(defaults)"), "{}", |name| {
            std::env::var(name).ok()
        })
    }

    fn from_yaml(
        path: &Path,
        text: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let shape = |message: String| ConfigError::Shape {
            path: path.to_owned(),
            message,
        };
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|source| ConfigError::Yaml {
                path: path.to_owned(),
                source,
            })?;
        if value.is_null() {
            value = serde_yaml::Value::Mapping(Default::default());
        }
        if !value.is_mapping() {
            return Err(shape("the top level must be a mapping of sections".into()));
        }
        expand::expand_strings(&mut value, &lookup).map_err(|source| ConfigError::Expand {
            path: path.to_owned(),
            source,
        })?;
        let raw: RawConfig = Figment::from(Serialized::defaults(value))
            .merge(
                Env::prefixed(ENV_PREFIX)
                    .ignore(&CLIENT_VARIABLES)
                    .split("__"),
            )
            .extract()
            .map_err(|e| shape(figment_message(e)))?;
        Self::from_raw(path, raw)
    }

    /// Checks a raw configuration and derives the typed one.
    pub fn from_raw(path: &Path, raw: RawConfig) -> Result<Self, ConfigError> {
        Self::check(path, raw).map_err(|source| ConfigError::Value {
            path: path.to_owned(),
            source,
        })
    }

    fn check(path: &Path, raw: RawConfig) -> Result<Self, BadValue> {
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| PathBuf::from(s));
        let services = Services {
            ai_router: ServiceSection::from_raw("ai_router", &raw.ai_router)?,
            web: ServiceSection::from_raw("web", &raw.web)?,
            memarch: ServiceSection::from_raw("memarch", &raw.memarch)?,
            scm: ServiceSection::from_raw("scm", &raw.scm)?,
            audit_log: ServiceSection::from_raw("audit_log", &raw.audit_log)?,
        };
        let http = &raw.policy.http;
        let outbound = OutboundPolicy::new(
            &http.allow_hosts,
            &http.deny_hosts,
            http.deny_private_networks,
            services.action_hosts(),
        )?;
        let store = StoreConfig::from_raw(&raw.database)?;
        Ok(Self {
            source: path.to_owned(),
            server: ServerSettings::from_raw(&raw.server, &store)?,
            store,
            workflow_schema: non_empty(&raw.policy.workflow_schema),
            requires_approval: raw.policy.requires_approval,
            outbound: Arc::new(outbound),
            templates_path: non_empty(&raw.templates.path),
            engine: EngineSettings::from_raw(&raw.engine)?,
            limits: ServerLimits::from_raw(&raw.limits)?,
            log: LogConfig::from_raw(&raw.log)?,
            logs: RunLogSettings::from_raw(&raw.logs)?,
            secrets: raw
                .secrets
                .into_iter()
                .map(|(name, value)| (name, Secret::new(value)))
                .collect(),
            services,
            hooks: HookSettings::from_raw(&raw.hooks)?,
            triggers: TriggerSettings::from_raw(&raw.triggers)?,
            auth: auth::api_tokens(&raw.auth)?,
            retention: RetentionSettings::from_raw(&raw.retention)?,
        })
    }

    /// The address to bind, `host:port`.
    pub fn bind_address(&self) -> String {
        format!("{}:{}", self.server.host, self.server.port)
    }
}

fn figment_message(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let from = match &e.metadata {
                Some(m) if m.name.contains("environment") => {
                    format!(
                        " (from {ENV_PREFIX}{})",
                        key.to_uppercase().replace('.', "__")
                    )
                }
                _ => String::new(),
            };
            if key.is_empty() {
                format!("{}{from}", e.kind)
            } else {
                format!("{key}: {}{from}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_yaml(Path::new("config.yaml"), text, |n| vars.get(n).cloned())
    }

    #[test]
    fn defaults_listen_on_port_8100_with_the_embedded_store() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.server.port, 8100);
        assert!(matches!(c.store, StoreConfig::Sqlite { .. }));
    }

    #[test]
    fn a_postgres_dsn_selects_postgres_with_its_pool_size_and_statement_timeout() {
        let c = load(
            "database:\n  dsn: postgres://u@localhost/db\n  pool_size: 4\n  statement_timeout: 2s\n",
            &[],
        )
        .unwrap();
        match c.store {
            StoreConfig::Postgres {
                dsn,
                pool_size,
                statement_timeout,
            } => {
                assert_eq!(dsn.expose(), "postgres://u@localhost/db");
                assert_eq!((pool_size, statement_timeout), (4, Duration::from_secs(2)));
            }
            other => panic!("expected PostgreSQL, got {other:?}"),
        }
        assert!(load("database:\n  dsn: postgres://u@h/db\n  pool_size: 1\n", &[]).is_err());
    }

    #[test]
    fn variables_in_strings_are_expanded_with_defaults() {
        let c = load(
            "ai_router:\n  base_url: ${ROUTER:-http://localhost:1}\n  headers:\n    Authorization: Bearer ${TOKEN}\n",
            &[("TOKEN", "s3cret")],
        )
        .unwrap();
        let ai = &c.services.ai_router;
        assert_eq!(
            ai.base_url.as_ref().unwrap().as_str(),
            "http://localhost:1/"
        );
        assert_eq!(ai.headers[0].0, "Authorization");
        assert_eq!(ai.headers[0].1.expose(), "Bearer s3cret");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_and_key() {
        let err = load("server:\n  prot: 1\n", &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("config.yaml:") && err.contains("prot"),
            "{err}"
        );
        let err = load("server:\n  port: many\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.port"), "{err}");
        let err = load("database:\n  synchronous: sometimes\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.synchronous"), "{err}");
    }

    #[test]
    fn hook_settings_have_safe_defaults_and_are_checked() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.hooks.memarch_path, "/v1/events");
        assert_eq!(c.hooks.max_attempts, 0);
        let err = load("hooks:\n  audit_log_path: v1/events\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("hooks.audit_log_path"), "{err}");
        let err = load("hooks:\n  backoff: 1m\n  max_backoff: 1s\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("hooks.backoff"), "{err}");
    }

    #[test]
    fn run_log_limits_have_safe_defaults_and_reject_nonsense() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.logs.max_entries_per_run, 100_000);
        assert_eq!(c.logs.keep_alive, Duration::from_secs(15));
        let c = load("logs:\n  keep_alive: 2s\n  max_line_bytes: 100\n", &[]).unwrap();
        assert_eq!(c.logs.keep_alive, Duration::from_secs(2));
        assert_eq!(c.logs.max_line_bytes, 100);
        let err = load("logs:\n  max_line_bytes: 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("logs.max_line_bytes"), "{err}");
    }

    #[test]
    fn tokens_come_from_the_file_and_the_environment() {
        let c = load(
            "auth:\n  tokens:\n    - {name: ci, token: \"${CI_TOKEN}\", role: admin}\n    - {name: grafana, token: read-only-token-123, role: reader}\n",
            &[("CI_TOKEN", "0123456789abcdef")],
        )
        .unwrap();
        assert_eq!(c.auth.len(), 2);
        assert_eq!(c.auth[0].name, "ci");
        assert_eq!(c.auth[0].role, Role::Admin);
        assert_eq!(c.auth[0].digest, token_digest("0123456789abcdef"));
        assert_eq!(c.auth[1].role, Role::Reader);
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn bad_tokens_are_refused_with_their_key() {
        let err = load(
            "auth:\n  tokens:\n    - {name: ci, token: \"${UNSET_TOKEN}\", role: admin}\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.tokens[0].token"), "{err}");
        let err = load(
            "auth:\n  tokens:\n    - {name: ci, token: 0123456789abcdef, role: owner}\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.tokens[0].role"), "{err}");
        let twice = "auth:\n  tokens:\n    - {name: ci, token: 0123456789abcdef, role: admin}\n    - {name: ci, token: 0123456789abcdeX, role: admin}\n";
        let err = load(twice, &[]).unwrap_err().to_string();
        assert!(err.contains("auth.tokens[1].name"), "{err}");
    }

    #[test]
    fn operating_limits_have_safe_defaults_and_reject_nonsense() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(20));
        assert_eq!(c.limits.max_output_bytes, 256 * 1024);
        assert_eq!(c.limits.max_context_bytes, 1024 * 1024);
        assert!(!c.requires_approval);
        for (yaml, key) in [
            (
                "limits:\n  max_output_bytes: 10\n",
                "limits.max_output_bytes",
            ),
            ("limits:\n  max_steps: 0\n", "limits.max_steps"),
            ("server:\n  shutdown_grace: 0s\n", "server.shutdown_grace"),
            (
                "policy:\n  http:\n    allow_hosts: [\"https://x.com\"]\n",
                "policy.http.allow_hosts[0]",
            ),
        ] {
            let err = load(yaml, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn the_shipped_config_yaml_loads_and_keeps_the_defaults() {
        let shipped = load(include_str!("../../config.yaml"), &[]).unwrap();
        let defaults = load("", &[]).unwrap();
        assert_eq!(
            format!("{:?}", shipped.limits),
            format!("{:?}", defaults.limits)
        );
        assert_eq!(
            format!("{:?}", shipped.outbound),
            format!("{:?}", defaults.outbound)
        );
        assert_eq!(
            shipped.server.shutdown_grace,
            defaults.server.shutdown_grace
        );
        assert_eq!(
            shipped.engine.max_active_runs,
            defaults.engine.max_active_runs
        );
        assert_eq!(shipped.triggers, defaults.triggers);
        assert_eq!(shipped.retention, defaults.retention);
        assert_eq!(shipped.server.id, defaults.server.id);
    }

    #[test]
    fn retention_keeps_runs_30_days_and_hook_events_7_and_0_keeps_everything() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.retention.runs, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(
            c.retention.hook_events,
            Some(Duration::from_secs(7 * 86400))
        );
        let c = load("retention:\n  runs: 0\n  hook_events: 12h\n", &[]).unwrap();
        assert_eq!(c.retention.runs, None);
        assert_eq!(
            c.retention.hook_events,
            Some(Duration::from_secs(12 * 3600))
        );
        let err = load("retention:\n  interval: 1ms\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("retention.interval"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_secrets_tokens_or_header_values() {
        let c = load(
            "secrets:\n  API_KEY: key-value-123456\nai_router:\n  base_url: http://r:1\n  headers:\n    Authorization: Bearer header-value-987\ndatabase:\n  dsn: postgres://u:dsn-password@h/db\nauth:\n  tokens:\n    - {name: ci, token: token-value-abcdef, role: admin}\n",
            &[],
        )
        .unwrap();
        let printed = format!("{c:?}");
        for secret in [
            "key-value-123456",
            "header-value-987",
            "dsn-password",
            "token-value-abcdef",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("API_KEY") && printed.contains("Authorization"));
    }

    #[test]
    fn malformed_yaml_is_reported_with_the_file_name() {
        let err = load("server: [1,\n", &[]).unwrap_err().to_string();
        assert!(err.starts_with("config.yaml: malformed YAML"), "{err}");
    }
}
