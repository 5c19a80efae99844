//! The typed sections of a checked configuration, each built from its raw shape by a
//! function that checks it and names the offending key. The rest of the server uses only
//! these; a section that exists is valid.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::BadValue;
use super::raw::{
    RawDatabase, RawEngine, RawHooks, RawLimits, RawLog, RawRunLogs, RawServer, RawService,
};
use crate::expr::Budget;
use crate::outbound::Backoff;
use crate::secret::Secret;
use crate::store::sqlite::SqliteOptions;

/// The HTTP server (`server:`).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// On SIGTERM/SIGINT, how long steps in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl ServerSettings {
    pub(super) fn from_raw(raw: &RawServer) -> Result<Self, BadValue> {
        if raw.shutdown_grace.is_zero() {
            return Err(BadValue::new(
                "server.shutdown_grace",
                "must be more than 0",
            ));
        }
        Ok(Self {
            host: raw.host.clone(),
            port: raw.port,
            workers: raw.workers,
            shutdown_grace: raw.shutdown_grace,
        })
    }
}

/// Which store to open (`database:`).
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite {
        path: PathBuf,
        options: SqliteOptions,
    },
    Postgres {
        dsn: Secret,
        pool_size: usize,
        statement_timeout: Duration,
    },
}

impl StoreConfig {
    pub(super) fn from_raw(raw: &RawDatabase) -> Result<Self, BadValue> {
        let dsn = raw.dsn.trim();
        if dsn.is_empty() {
            let synchronous_full = match raw.synchronous.to_ascii_lowercase().as_str() {
                "normal" => false,
                "full" => true,
                other => {
                    return Err(BadValue::new(
                        "database.synchronous",
                        format!("expected \"normal\" or \"full\", found {other:?}"),
                    ));
                }
            };
            if raw.wal_max_bytes < 1024 * 1024 {
                return Err(BadValue::new(
                    "database.wal_max_bytes",
                    "must be at least 1048576 (1 MiB)",
                ));
            }
            return Ok(Self::Sqlite {
                path: raw.path.clone(),
                options: SqliteOptions {
                    synchronous_full,
                    read_connections: raw.read_connections.max(1),
                    wal_max_bytes: raw.wal_max_bytes,
                },
            });
        }
        if !(dsn.starts_with("postgres://") || dsn.starts_with("postgresql://")) {
            return Err(BadValue::new(
                "database.dsn",
                "expected empty (embedded store) or a postgres:// URL",
            ));
        }
        if raw.pool_size < 2 {
            return Err(BadValue::new(
                "database.pool_size",
                "at least 2 connections are needed",
            ));
        }
        if raw.statement_timeout.is_zero() {
            return Err(BadValue::new(
                "database.statement_timeout",
                "must be more than 0",
            ));
        }
        Ok(Self::Postgres {
            dsn: Secret::new(dsn),
            pool_size: raw.pool_size,
            statement_timeout: raw.statement_timeout,
        })
    }
}

/// Run execution (`engine:`).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Runs executing at once on this server; more queue as `PENDING`.
    pub max_active_runs: usize,
    pub lease_ttl: Duration,
    pub idempotency_ttl: Duration,
    /// How often parked runs are checked for timeouts and queued runs for capacity.
    pub poll_interval: Duration,
    /// The binary run as the template sandbox; `None`: this executable.
    pub sandbox_command: Option<PathBuf>,
    /// Template sandbox processes at most.
    pub sandbox_processes: usize,
}

impl EngineSettings {
    pub(super) fn from_raw(raw: &RawEngine) -> Result<Self, BadValue> {
        if raw.max_active_runs == 0 {
            return Err(BadValue::new(
                "engine.max_active_runs",
                "must be at least 1",
            ));
        }
        if raw.lease_ttl < Duration::from_millis(300) {
            return Err(BadValue::new("engine.lease_ttl", "must be at least 300ms"));
        }
        if raw.poll_interval.is_zero() {
            return Err(BadValue::new("engine.poll_interval", "must be more than 0"));
        }
        if raw.sandbox_processes == 0 {
            return Err(BadValue::new(
                "engine.sandbox_processes",
                "must be at least 1",
            ));
        }
        let command = raw.sandbox_command.trim();
        Ok(Self {
            max_active_runs: raw.max_active_runs,
            lease_ttl: raw.lease_ttl,
            idempotency_ttl: raw.idempotency_ttl,
            poll_interval: raw.poll_interval,
            sandbox_command: (!command.is_empty()).then(|| PathBuf::from(command)),
            sandbox_processes: raw.sandbox_processes,
        })
    }
}

/// Sizes the server accepts and keeps (`limits:`), in bytes of compact JSON unless named
/// otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLimits {
    /// Largest request body accepted.
    pub body_bytes: usize,
    /// Most steps in one workflow.
    pub max_steps: usize,
    /// Largest `retry.max`.
    pub max_retries: u32,
    /// Largest page a list answers.
    pub max_page: usize,
    /// Largest `input` of a step: as submitted, and once rendered.
    pub max_input_bytes: usize,
    /// Largest run context: at start, and as steps and approvals add to it.
    pub max_context_bytes: usize,
    /// Largest output kept per step; larger outputs are truncated.
    pub max_output_bytes: usize,
    /// Most items one `foreach` step may run over.
    pub foreach_items: usize,
    /// Instructions and result size of one template evaluation.
    pub template: Budget,
    /// Address space of a template sandbox process.
    pub template_memory_bytes: u64,
    /// Longest a sandboxed template evaluation may take.
    pub template_time: Duration,
}

impl ServerLimits {
    pub(super) fn from_raw(raw: &RawLimits) -> Result<Self, BadValue> {
        for (key, value) in [
            ("limits.body_bytes", raw.body_bytes),
            ("limits.max_input_bytes", raw.max_input_bytes),
            ("limits.max_context_bytes", raw.max_context_bytes),
            ("limits.max_output_bytes", raw.max_output_bytes),
        ] {
            if value < 1024 {
                return Err(BadValue::new(key, "must be at least 1024"));
            }
        }
        for (key, value) in [
            ("limits.max_steps", raw.max_steps),
            ("limits.max_page", raw.max_page),
            ("limits.foreach_items", raw.foreach_items),
        ] {
            if value == 0 {
                return Err(BadValue::new(key, "must be at least 1"));
            }
        }
        if raw.template_fuel < 1000 {
            return Err(BadValue::new(
                "limits.template_fuel",
                "must be at least 1000",
            ));
        }
        if raw.template_bytes < 1024 {
            return Err(BadValue::new(
                "limits.template_bytes",
                "must be at least 1024",
            ));
        }
        if raw.template_memory_bytes < 64 * 1024 * 1024 {
            return Err(BadValue::new(
                "limits.template_memory_bytes",
                "must be at least 67108864 (64 MiB)",
            ));
        }
        if raw.template_time < Duration::from_millis(10) {
            return Err(BadValue::new(
                "limits.template_time",
                "must be at least 10ms",
            ));
        }
        Ok(Self {
            body_bytes: raw.body_bytes,
            max_steps: raw.max_steps,
            max_retries: raw.max_retries,
            max_page: raw.max_page,
            max_input_bytes: raw.max_input_bytes,
            max_context_bytes: raw.max_context_bytes,
            max_output_bytes: raw.max_output_bytes,
            foreach_items: raw.foreach_items,
            template: Budget {
                fuel: raw.template_fuel,
                max_bytes: raw.template_bytes,
            },
            template_memory_bytes: raw.template_memory_bytes,
            template_time: raw.template_time,
        })
    }
}

/// Run logs: client appends and live streaming (`logs:`; not the server's own `log:`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunLogSettings {
    /// Largest body of `POST /v1/runs/{id}/logs` (`413` beyond).
    pub body_bytes: usize,
    /// Longest client line kept; longer lines are cut and marked.
    pub max_line_bytes: usize,
    /// Most entries one run's log may hold; client appends beyond are refused (`409`).
    pub max_entries_per_run: u64,
    /// Largest page of `GET /v1/runs/{id}/logs`.
    pub max_page: usize,
    /// How often an idle SSE stream sends a keep-alive comment.
    pub keep_alive: Duration,
    /// Most SSE log streams open at once on this server (`503` beyond).
    pub max_streams: usize,
    /// Entries a run's live feed buffers; a subscriber further behind reads the store.
    pub feed_capacity: usize,
}

impl RunLogSettings {
    pub(super) fn from_raw(raw: &RawRunLogs) -> Result<Self, BadValue> {
        if raw.body_bytes < 1024 {
            return Err(BadValue::new("logs.body_bytes", "must be at least 1024"));
        }
        if raw.max_line_bytes < 64 {
            return Err(BadValue::new("logs.max_line_bytes", "must be at least 64"));
        }
        for (key, value) in [
            ("logs.max_entries_per_run", raw.max_entries_per_run),
            ("logs.max_page", raw.max_page as u64),
            ("logs.max_streams", raw.max_streams as u64),
        ] {
            if value == 0 {
                return Err(BadValue::new(key, "must be at least 1"));
            }
        }
        if raw.feed_capacity < 16 {
            return Err(BadValue::new("logs.feed_capacity", "must be at least 16"));
        }
        if raw.keep_alive < Duration::from_millis(100) {
            return Err(BadValue::new("logs.keep_alive", "must be at least 100ms"));
        }
        Ok(Self {
            body_bytes: raw.body_bytes,
            max_line_bytes: raw.max_line_bytes,
            max_entries_per_run: raw.max_entries_per_run,
            max_page: raw.max_page,
            keep_alive: raw.keep_alive,
            max_streams: raw.max_streams,
            feed_capacity: raw.feed_capacity,
        })
    }
}

/// Delivery of run and step events to `memarch` and `audit_log` (`hooks:`).
#[derive(Debug, Clone, PartialEq)]
pub struct HookSettings {
    /// Appended to `memarch.base_url`; empty: no hooks to memarch.
    pub memarch_path: String,
    /// Appended to `audit_log.base_url`; empty: no hooks to the audit log.
    pub audit_log_path: String,
    /// How often the outbox is read when it has nothing new.
    pub poll_interval: Duration,
    /// Delays between failed deliveries of an event.
    pub backoff: Backoff,
    /// Attempts per event before it is dropped (logged and counted); 0: until acknowledged.
    pub max_attempts: u32,
    /// Events read from the outbox at a time.
    pub batch_size: usize,
    /// Runs whose events are delivered at once (each run's events stay in order).
    pub concurrency: usize,
}

impl HookSettings {
    pub(super) fn from_raw(raw: &RawHooks) -> Result<Self, BadValue> {
        for (key, path) in [
            ("hooks.memarch_path", &raw.memarch_path),
            ("hooks.audit_log_path", &raw.audit_log_path),
        ] {
            if !path.is_empty() && !path.starts_with('/') {
                return Err(BadValue::new(
                    key,
                    "must start with / (or be empty to turn it off)",
                ));
            }
        }
        for (key, value) in [
            ("hooks.poll_interval", raw.poll_interval),
            ("hooks.backoff", raw.backoff),
        ] {
            if value.is_zero() {
                return Err(BadValue::new(key, "must be more than 0"));
            }
        }
        if raw.backoff > raw.max_backoff {
            return Err(BadValue::new(
                "hooks.backoff",
                "must not exceed hooks.max_backoff",
            ));
        }
        for (key, value) in [
            ("hooks.batch_size", raw.batch_size),
            ("hooks.concurrency", raw.concurrency),
        ] {
            if value == 0 {
                return Err(BadValue::new(key, "must be at least 1"));
            }
        }
        Ok(Self {
            memarch_path: raw.memarch_path.clone(),
            audit_log_path: raw.audit_log_path.clone(),
            poll_interval: raw.poll_interval,
            backoff: Backoff::doubling(raw.backoff, raw.max_backoff),
            max_attempts: raw.max_attempts,
            batch_size: raw.batch_size,
            concurrency: raw.concurrency,
        })
    }
}

/// The server's own log output (`log:`).
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub json: bool,
    /// A `tracing` filter such as `info` or `orchestrator=debug`.
    pub level: String,
}

impl LogConfig {
    pub(super) fn from_raw(raw: &RawLog) -> Result<Self, BadValue> {
        let json = match raw.format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(BadValue::new(
                    "log.format",
                    format!("expected \"text\" or \"json\", found {other:?}"),
                ));
            }
        };
        Ok(Self {
            json,
            level: raw.level.clone(),
        })
    }
}

/// A downstream service section (`ai_router`, `web`, `memarch`, `scm`, `audit_log`).
#[derive(Debug, Clone)]
pub struct ServiceSection {
    pub base_url: Option<Url>,
    /// Per attempt, unless a step sets its own `timeout_ms`.
    pub timeout: Duration,
    /// Sent with every call to `base_url`'s origin; usually credentials.
    pub headers: Vec<(String, Secret)>,
}

impl ServiceSection {
    pub(super) fn from_raw(name: &str, raw: &RawService) -> Result<Self, BadValue> {
        let key = format!("{name}.base_url");
        let text = raw.base_url.trim();
        let base_url = if text.is_empty() {
            None
        } else {
            let url = Url::parse(text)
                .map_err(|e| BadValue::new(&key, format!("{e}: {:?}", raw.base_url)))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(BadValue::new(&key, "only http and https URLs are allowed"));
            }
            Some(url)
        };
        Ok(Self {
            base_url,
            timeout: raw.timeout,
            headers: raw
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                .collect(),
        })
    }
}

/// The service sections by name.
#[derive(Debug, Clone)]
pub struct Services {
    pub ai_router: ServiceSection,
    pub web: ServiceSection,
    pub memarch: ServiceSection,
    pub scm: ServiceSection,
    pub audit_log: ServiceSection,
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
