//! Server configuration: `config.yaml`, `${VAR}` expansion and `ORCHESTRATOR_…` overrides.
//!
//! Loading happens in two stages: the file is parsed as YAML, every string value has its
//! `${VAR}` / `${VAR:-default}` references expanded from the environment, environment
//! overrides are merged on top (`ORCHESTRATOR_SERVER__PORT=9000` sets `server.port`), and
//! the result is deserialised into [`RawConfig`] (unknown keys are errors, so typos do not
//! pass silently). [`Config::from_raw`] then checks values and derives the typed [`Config`]
//! the rest of the server uses; a `Config` is always valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Serialized};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::actions::policy::OutboundPolicy;

/// Prefix of environment variables that override config keys; `__` separates levels.
pub const ENV_PREFIX: &str = "ORCHESTRATOR_";

/// Variables with [`ENV_PREFIX`] that belong to the command-line client
/// (`ORCHESTRATOR_URL`, `ORCHESTRATOR_TOKEN`), not to the server's configuration.
pub const CLIENT_VARIABLES: [&str; 2] = ["URL", "TOKEN"];

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
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// `config.yaml` as written, before checks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub database: RawDatabase,
    pub policy: RawPolicy,
    pub templates: RawTemplates,
    pub engine: RawEngine,
    pub limits: RawLimits,
    pub log: RawLog,
    pub logs: RawRunLogs,
    pub secrets: BTreeMap<String, String>,
    pub ai_router: RawService,
    pub web: RawService,
    pub memarch: RawService,
    pub scm: RawService,
    pub audit_log: RawService,
    pub hooks: RawHooks,
    pub auth: RawAuth,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    pub host: String,
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// On SIGTERM/SIGINT, how long steps in flight may take to finish before they are cut
    /// off (to run again after the next start).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8100,
            workers: 0,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawDatabase {
    /// Empty: the embedded SQLite store at `path`. `postgres://…`: PostgreSQL.
    pub dsn: String,
    pub path: PathBuf,
    /// `normal` (survives process death) or `full` (also survives power loss).
    pub synchronous: String,
    /// Read connections of the embedded store.
    pub read_connections: usize,
    /// Connections in the PostgreSQL pool.
    pub pool_size: usize,
    /// Longest one PostgreSQL statement may run before the server cancels it.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            dsn: String::new(),
            path: PathBuf::from("data/orchestrator.db"),
            synchronous: "normal".into(),
            read_connections: 4,
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPolicy {
    /// An operator's workflow JSON Schema replacing the bundled one.
    pub workflow_schema: String,
    /// Every step waits for approval, as if it said `requires_approval: true`.
    pub requires_approval: bool,
    /// Where network actions may call (`policy.http`).
    pub http: RawHttpPolicy,
}

/// The outbound policy of network actions (see `crate::actions::policy`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHttpPolicy {
    /// Host patterns (`api.example.com`, `*.example.com`), IP addresses or CIDR networks;
    /// when not empty, only these may be called.
    pub allow_hosts: Vec<String>,
    /// Patterns as in `allow_hosts` that may never be called; deny wins over allow.
    pub deny_hosts: Vec<String>,
    /// Deny loopback, private (RFC 1918), unique local, CGNAT and other internal addresses.
    /// Off by default, so that a server and its services can share a host or network.
    pub deny_private_networks: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTemplates {
    /// A template pack file replacing the bundled `templates/templates.json`.
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawEngine {
    /// Runs executing at once on this server; more queue as `PENDING`.
    pub max_active_runs: usize,
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// How often parked runs are checked for approval timeouts and queued runs for capacity.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for RawEngine {
    fn default() -> Self {
        Self {
            max_active_runs: 1000,
            lease_ttl: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request body accepted, in bytes.
    pub body_bytes: usize,
    /// Most steps in one workflow.
    pub max_steps: usize,
    /// Largest `retry.max`.
    pub max_retries: u32,
    /// Largest page a list answers.
    pub max_page: usize,
    /// Largest `input` of a step, in bytes of JSON: as submitted, and once rendered.
    pub max_input_bytes: usize,
    /// Largest run context, in bytes of JSON: at start, and as steps and approvals add to it.
    pub max_context_bytes: usize,
    /// Largest output kept per step, in bytes of JSON; larger outputs are truncated.
    pub max_output_bytes: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            body_bytes: 1024 * 1024,
            max_steps: 500,
            max_retries: 100,
            max_page: 500,
            max_input_bytes: 256 * 1024,
            max_context_bytes: 1024 * 1024,
            max_output_bytes: crate::actions::DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl RawLimits {
    fn check(&self) -> Result<(), String> {
        for (key, value) in [
            ("limits.body_bytes", self.body_bytes),
            ("limits.max_input_bytes", self.max_input_bytes),
            ("limits.max_context_bytes", self.max_context_bytes),
            ("limits.max_output_bytes", self.max_output_bytes),
        ] {
            if value < 1024 {
                return Err(format!("{key}: must be at least 1024"));
            }
        }
        if self.max_steps == 0 || self.max_page == 0 {
            return Err("limits.max_steps and limits.max_page: must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter such as `info` or `orchestrator=debug`.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Run logs: client appends and live streaming (`logs:`; not the server's own `log:`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRunLogs {
    /// Largest body of `POST /v1/runs/{id}/logs`, in bytes (`413` beyond).
    pub body_bytes: usize,
    /// Longest client line kept, in bytes; longer lines are cut and marked.
    pub max_line_bytes: usize,
    /// Most entries one run's log may hold; client appends beyond are refused (`409`).
    pub max_entries_per_run: u64,
    /// Largest page of `GET /v1/runs/{id}/logs`.
    pub max_page: usize,
    /// How often an idle SSE stream sends a keep-alive comment.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Most SSE log streams open at once on this server (`503` beyond).
    pub max_streams: usize,
    /// Entries a run's live feed buffers; a subscriber further behind reads the store.
    pub feed_capacity: usize,
}

impl Default for RawRunLogs {
    fn default() -> Self {
        Self {
            body_bytes: 1024 * 1024,
            max_line_bytes: 8 * 1024,
            max_entries_per_run: 100_000,
            max_page: 10_000,
            keep_alive: Duration::from_secs(15),
            max_streams: 10_000,
            feed_capacity: crate::logs::FEED_CAPACITY,
        }
    }
}

impl RawRunLogs {
    fn check(&self) -> Result<(), String> {
        if self.body_bytes < 1024 {
            return Err("logs.body_bytes: must be at least 1024".into());
        }
        if self.max_line_bytes < 64 {
            return Err("logs.max_line_bytes: must be at least 64".into());
        }
        if self.max_entries_per_run == 0 || self.max_page == 0 || self.max_streams == 0 {
            return Err(
                "logs.max_entries_per_run, logs.max_page and logs.max_streams: must be at least 1"
                    .into(),
            );
        }
        if self.feed_capacity < 16 {
            return Err("logs.feed_capacity: must be at least 16".into());
        }
        if self.keep_alive < Duration::from_millis(100) {
            return Err("logs.keep_alive: must be at least 100ms".into());
        }
        Ok(())
    }
}

/// A downstream service section (`ai_router`, `web`, `memarch`, `scm`, `audit_log`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawService {
    pub base_url: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub headers: BTreeMap<String, String>,
}

impl Default for RawService {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            timeout: Duration::from_secs(30),
            headers: BTreeMap::new(),
        }
    }
}

/// Bearer tokens (`auth:`); none means the API is open.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    pub tokens: Vec<RawToken>,
}

/// One `auth.tokens` entry as written.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawToken {
    /// Recorded as `created_by`, approval `by`, and in cancel and retry log entries.
    pub name: String,
    pub token: String,
    /// `admin` or `reader`.
    pub role: String,
}

impl std::fmt::Debug for RawToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawToken")
            .field("name", &self.name)
            .field("token", &"***")
            .field("role", &self.role)
            .finish()
    }
}

/// Delivery of run and step events to `memarch` and `audit_log` (see `crate::hooks`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHooks {
    /// Appended to `memarch.base_url`; empty: no hooks to memarch.
    pub memarch_path: String,
    /// Appended to `audit_log.base_url`; empty: no hooks to the audit log.
    pub audit_log_path: String,
    /// How often the outbox is read when it has nothing new.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The first delay after a failed delivery; it doubles per failure up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Attempts per event before it is dropped (logged and counted); 0: until acknowledged.
    pub max_attempts: u32,
    /// Events read from the outbox at a time.
    pub batch_size: usize,
    /// Runs whose events are delivered at once (each run's events stay in order).
    pub concurrency: usize,
}

impl Default for RawHooks {
    fn default() -> Self {
        Self {
            memarch_path: "/v1/events".into(),
            audit_log_path: "/v1/events".into(),
            poll_interval: Duration::from_millis(250),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_attempts: 0,
            batch_size: 256,
            concurrency: 8,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub source: PathBuf,
    pub server: RawServer,
    pub store: StoreConfig,
    pub workflow_schema: Option<PathBuf>,
    pub requires_approval: bool,
    /// Where network actions may call.
    pub outbound: Arc<OutboundPolicy>,
    pub templates_path: Option<PathBuf>,
    pub engine: RawEngine,
    pub limits: RawLimits,
    pub log: LogConfig,
    /// Run logs (client appends, SSE streaming).
    pub logs: RawRunLogs,
    pub secrets: BTreeMap<String, String>,
    pub services: Services,
    pub hooks: RawHooks,
    /// API tokens; empty: no authentication.
    pub auth: Vec<ApiToken>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything a reader may, plus changing workflows and templates and acting on runs.
    Admin,
    /// Reading and streaming only.
    Reader,
}

impl Role {
    /// The name used in config and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Reader => "reader",
        }
    }
}

/// A configured API token. Only the SHA-256 digest of the secret is kept, so the secret
/// itself is never printed and comparisons take the same time whatever its length.
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub digest: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 digest of a token secret.
pub fn token_digest(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// Which store to open.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite {
        path: PathBuf,
        synchronous_full: bool,
        read_connections: usize,
    },
    Postgres {
        dsn: String,
        pool_size: usize,
        statement_timeout: Duration,
    },
}

/// Telemetry output.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub json: bool,
    pub level: String,
}

/// A configured downstream service.
#[derive(Debug, Clone)]
pub struct Service {
    pub base_url: Option<Url>,
    pub timeout: Duration,
    pub headers: BTreeMap<String, String>,
}

/// The service sections by name.
#[derive(Debug, Clone)]
pub struct Services {
    pub ai_router: Service,
    pub web: Service,
    pub memarch: Service,
    pub scm: Service,
    pub audit_log: Service,
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
        let invalid = |message: String| ConfigError::Invalid {
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
            return Err(invalid(
                "the top level must be a mapping of sections".into(),
            ));
        }
        expand_strings(&mut value, &lookup).map_err(invalid)?;
        let raw: RawConfig = Figment::from(Serialized::defaults(value))
            .merge(
                Env::prefixed(ENV_PREFIX)
                    .ignore(&CLIENT_VARIABLES)
                    .split("__"),
            )
            .extract()
            .map_err(|e| invalid(figment_message(e)))?;
        Self::from_raw(path, raw).map_err(invalid)
    }

    /// Checks a raw configuration and derives the typed one.
    pub fn from_raw(path: &Path, raw: RawConfig) -> Result<Self, String> {
        let store = if raw.database.dsn.trim().is_empty() {
            let synchronous_full = match raw.database.synchronous.to_ascii_lowercase().as_str() {
                "normal" => false,
                "full" => true,
                other => {
                    return Err(format!(
                        "database.synchronous: expected \"normal\" or \"full\", found {other:?}"
                    ));
                }
            };
            StoreConfig::Sqlite {
                path: raw.database.path.clone(),
                synchronous_full,
                read_connections: raw.database.read_connections.max(1),
            }
        } else if raw.database.dsn.starts_with("postgres://")
            || raw.database.dsn.starts_with("postgresql://")
        {
            if raw.database.pool_size < 2 {
                return Err("database.pool_size: at least 2 connections are needed".into());
            }
            if raw.database.statement_timeout.is_zero() {
                return Err("database.statement_timeout: must be more than 0".into());
            }
            StoreConfig::Postgres {
                dsn: raw.database.dsn.clone(),
                pool_size: raw.database.pool_size,
                statement_timeout: raw.database.statement_timeout,
            }
        } else {
            return Err(
                "database.dsn: expected empty (embedded store) or a postgres:// URL".into(),
            );
        };
        let json = match raw.log.format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(format!(
                    "log.format: expected \"text\" or \"json\", found {other:?}"
                ));
            }
        };
        if raw.engine.max_active_runs == 0 {
            return Err("engine.max_active_runs: must be at least 1".into());
        }
        raw.limits.check()?;
        if raw.server.shutdown_grace.is_zero() {
            return Err("server.shutdown_grace: must be more than 0".into());
        }
        check_hooks(&raw.hooks)?;
        raw.logs.check()?;
        let auth = api_tokens(&raw.auth)?;
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| PathBuf::from(s));
        let services = Services {
            ai_router: service("ai_router", &raw.ai_router)?,
            web: service("web", &raw.web)?,
            memarch: service("memarch", &raw.memarch)?,
            scm: service("scm", &raw.scm)?,
            audit_log: service("audit_log", &raw.audit_log)?,
        };
        let http = &raw.policy.http;
        let outbound = OutboundPolicy::new(
            &http.allow_hosts,
            &http.deny_hosts,
            http.deny_private_networks,
            services.action_hosts(),
        )?;
        Ok(Self {
            source: path.to_owned(),
            store,
            workflow_schema: non_empty(&raw.policy.workflow_schema),
            requires_approval: raw.policy.requires_approval,
            outbound: Arc::new(outbound),
            templates_path: non_empty(&raw.templates.path),
            log: LogConfig {
                json,
                level: raw.log.level.clone(),
            },
            services,
            hooks: raw.hooks,
            auth,
            server: raw.server,
            engine: raw.engine,
            limits: raw.limits,
            logs: raw.logs,
            secrets: raw.secrets,
        })
    }

    /// The address to bind, `host:port`.
    pub fn bind_address(&self) -> String {
        format!("{}:{}", self.server.host, self.server.port)
    }
}

impl Services {
    /// The hosts of the configured base URLs of the services actions call: the outbound
    /// policy treats them as named by the operator.
    pub fn action_hosts(&self) -> Vec<url::Host<String>> {
        [&self.ai_router, &self.web, &self.memarch, &self.scm]
            .into_iter()
            .filter_map(|s| s.base_url.as_ref()?.host().map(|h| h.to_owned()))
            .collect()
    }
}

fn service(name: &str, raw: &RawService) -> Result<Service, String> {
    let base_url = if raw.base_url.trim().is_empty() {
        None
    } else {
        let url = Url::parse(raw.base_url.trim())
            .map_err(|e| format!("{name}.base_url: {e}: {:?}", raw.base_url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "{name}.base_url: only http and https URLs are allowed"
            ));
        }
        Some(url)
    };
    Ok(Service {
        base_url,
        timeout: raw.timeout,
        headers: raw.headers.clone(),
    })
}

/// The shortest token secret accepted: shorter ones are guessable.
const MIN_TOKEN_LEN: usize = 16;

fn api_tokens(raw: &RawAuth) -> Result<Vec<ApiToken>, String> {
    let mut tokens: Vec<ApiToken> = Vec::with_capacity(raw.tokens.len());
    for (i, t) in raw.tokens.iter().enumerate() {
        let key = format!("auth.tokens[{i}]");
        let name = t.name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(format!(
                "{key}.name: must have 1 to 64 printable characters"
            ));
        }
        let role = match t.role.trim().to_ascii_lowercase().as_str() {
            "admin" => Role::Admin,
            "reader" => Role::Reader,
            other => {
                return Err(format!(
                    "{key}.role: expected \"admin\" or \"reader\", found {other:?}"
                ));
            }
        };
        if t.token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "{key}.token: must have at least {MIN_TOKEN_LEN} characters \
                 (is the environment variable it names set?)"
            ));
        }
        let digest = token_digest(&t.token);
        if tokens.iter().any(|o| o.name == name) {
            return Err(format!("{key}.name: {name:?} is used twice"));
        }
        if tokens.iter().any(|o| o.digest == digest) {
            return Err(format!("{key}.token: the same token is configured twice"));
        }
        tokens.push(ApiToken {
            name: name.to_owned(),
            role,
            digest,
        });
    }
    Ok(tokens)
}

fn check_hooks(hooks: &RawHooks) -> Result<(), String> {
    for (key, path) in [
        ("hooks.memarch_path", &hooks.memarch_path),
        ("hooks.audit_log_path", &hooks.audit_log_path),
    ] {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(format!(
                "{key}: must start with / (or be empty to turn it off)"
            ));
        }
    }
    if hooks.poll_interval.is_zero() || hooks.backoff.is_zero() {
        return Err("hooks.poll_interval and hooks.backoff must be more than 0".into());
    }
    if hooks.backoff > hooks.max_backoff {
        return Err("hooks.backoff: must not exceed hooks.max_backoff".into());
    }
    if hooks.batch_size == 0 || hooks.concurrency == 0 {
        return Err("hooks.batch_size and hooks.concurrency must be at least 1".into());
    }
    Ok(())
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

/// Expands `${VAR}` and `${VAR:-default}` in every string value; an unset variable without a
/// default expands to the empty string. A bare `$` is left alone, so values such as passwords
/// or patterns containing `$` survive unchanged.
fn expand_strings(
    value: &mut serde_yaml::Value,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
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

fn expand(input: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {input:?}"))?;
        let reference = &after[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "bad variable reference ${{{reference}}} in {input:?}"
            ));
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
                assert_eq!(dsn, "postgres://u@localhost/db");
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
        assert_eq!(ai.headers["Authorization"], "Bearer s3cret");
    }

    #[test]
    fn a_bare_dollar_is_not_an_expansion() {
        assert_eq!(
            expand("pa$$word $HOME", &|_| None).unwrap(),
            "pa$$word $HOME"
        );
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
        let shipped = load(include_str!("../config.yaml"), &[]).unwrap();
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
    }

    #[test]
    fn malformed_yaml_is_reported_with_the_file_name() {
        let err = load("server: [1,\n", &[]).unwrap_err().to_string();
        assert!(err.starts_with("config.yaml: malformed YAML"), "{err}");
    }
}
