//! `config.yaml` as written: the serde shapes with their defaults. Unknown keys are
//! errors, so typos do not pass silently. Nothing here is used at run time; see the typed
//! sections in [`super::sections`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Entries a run's live log feed buffers by default (`logs.feed_capacity`). A feed holds
/// all its slots from its first subscriber on (~32 bytes each): 256 is ~8 KiB per run with
/// a stream open, where 4,096 held ~132 KiB (1.3 GiB for `logs.max_streams` streams on
/// distinct runs) and cost ~57k instructions per stream to set up and tear down.
pub const DEFAULT_FEED_CAPACITY: usize = 256;

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
    pub triggers: RawTriggers,
    pub auth: RawAuth,
    pub retention: RawRetention,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    /// This server's identity in the store (lease holder); empty: derived from the host
    /// name and the database.
    pub id: String,
    pub host: String,
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// On SIGTERM/SIGINT, how long steps in flight may take to finish before they are cut
    /// off (to run again after the next start).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Cross-origin browser access (`server.cors`).
    pub cors: RawCors,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            id: String::new(),
            host: "127.0.0.1".into(),
            port: 8100,
            workers: 0,
            shutdown_grace: Duration::from_secs(20),
            cors: RawCors::default(),
        }
    }
}

/// Which web pages on other origins may call the API from a browser.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCors {
    /// Origins (`https://app.example.com`, scheme, host and port) whose pages may call the
    /// API, or `*` for any; empty: none (the console, served from the API's own origin,
    /// needs nothing here).
    pub allowed_origins: Vec<String>,
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
    /// The embedded store's write-ahead log is kept under this many bytes on disk.
    pub wal_max_bytes: u64,
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
            wal_max_bytes: crate::store::sqlite::DEFAULT_WAL_MAX_BYTES,
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

/// The outbound policy of network actions (see `crate::outbound::policy`).
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
    /// The `orchestrator` binary run as the template sandbox; empty: this executable.
    pub sandbox_command: String,
    /// Template sandbox processes at most.
    pub sandbox_processes: usize,
}

impl Default for RawEngine {
    fn default() -> Self {
        Self {
            max_active_runs: 1000,
            lease_ttl: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            sandbox_command: String::new(),
            sandbox_processes: 2,
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
    /// Most items one `foreach` step may run over.
    pub foreach_items: usize,
    /// Instructions one template evaluation may execute.
    pub template_fuel: u64,
    /// Largest result of one template evaluation, in bytes.
    pub template_bytes: usize,
    /// Address space of a template sandbox process, in bytes.
    pub template_memory_bytes: u64,
    /// Longest a sandboxed template evaluation may take.
    #[serde(with = "humantime_serde")]
    pub template_time: Duration,
    /// The default token budget of a run's `ai_router.chat` steps; 0: none.
    pub run_tokens: u64,
    /// What the default budget does once spent: `strict` (the next step fails) or `warn`.
    pub run_tokens_mode: String,
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
            max_output_bytes: crate::size::DEFAULT_MAX_OUTPUT_BYTES,
            foreach_items: 10_000,
            template_fuel: 1_000_000,
            template_bytes: 1024 * 1024,
            template_memory_bytes: 512 * 1024 * 1024,
            template_time: Duration::from_secs(2),
            run_tokens: 0,
            run_tokens_mode: "strict".into(),
        }
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
            feed_capacity: DEFAULT_FEED_CAPACITY,
        }
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

/// Cron schedules and webhook triggers (see `crate::triggers`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTriggers {
    /// The longest the schedule loop sleeps (how soon changes on other replicas are seen).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A tick later than this is coalesced with later ones: only the latest due one fires.
    #[serde(with = "humantime_serde")]
    pub misfire_grace: Duration,
    /// Bytes of a webhook request's body kept with the run it starts.
    pub request_bytes: usize,
}

impl Default for RawTriggers {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            misfire_grace: Duration::from_secs(60),
            request_bytes: 64 * 1024,
        }
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

/// How long finished runs and delivered hook events are kept (`retention:`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRetention {
    /// Finished runs older than this are deleted with their steps, logs and events; 0
    /// keeps everything.
    #[serde(with = "age")]
    pub runs: Duration,
    /// Hook events every target acknowledged are deleted once this old; 0 keeps them.
    #[serde(with = "age")]
    pub hook_events: Duration,
    /// How often retention looks for what to delete.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RawRetention {
    fn default() -> Self {
        Self {
            runs: Duration::from_secs(30 * 24 * 3600),
            hook_events: Duration::from_secs(7 * 24 * 3600),
            interval: Duration::from_secs(60),
        }
    }
}

/// An age such as `30d`, or a bare `0` (YAML and the environment read it as a number).
mod age {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(d, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Written::deserialize(d)? {
            Written::Number(0) => Ok(Duration::ZERO),
            Written::Number(n) => Err(serde::de::Error::custom(format!(
                "expected a duration such as 30d, or 0, found {n}"
            ))),
            Written::Text(text) => humantime_serde::re::humantime::parse_duration(text.trim())
                .map_err(serde::de::Error::custom),
        }
    }
}
