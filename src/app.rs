//! Wiring: builds the store, validator, template pack, engine, hook delivery and HTTP
//! server from a [`Config`], and runs them until a shutdown signal. `main` and every
//! integration test start the server through [`App::build`] and [`App::run`].

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App as ActixApp, HttpServer, web};
use tokio::sync::Semaphore;

use crate::actions::Registry;
use crate::api::{self, AppState, ServerInfo};
use crate::config::{Config, StoreConfig};
use crate::definition::schema::SchemaError;
use crate::definition::{Limits, Validator, WorkflowSchema};
use crate::engine::{Engine, Parts, RunLimits, Settings};
use crate::expr::Redactor;
use crate::feed::Feed;
use crate::hooks::{HookRuntime, Hooks};
use crate::logs::LogHub;
use crate::metrics::{Metrics, MetricsError};
use crate::outbound::{ClientOptions, HttpClient, UrlError};
use crate::sandbox::{Sandbox, SandboxError, SandboxSettings};
use crate::store::postgres::{PgOptions, PostgresStore};
use crate::store::sqlite::SqliteStore;
use crate::store::timed::TimedStore;
use crate::store::{DynStore, StoreError};
use crate::templates::{Pack, PackError};
use crate::triggers::{Scheduler, SchedulerSettings};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("workflow schema {0}")]
    Schema(#[from] SchemaError),
    #[error("template pack {0}")]
    Pack(#[from] PackError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("server.host, server.port: cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] crate::outbound::ClientError),
    #[error("hooks: {0}")]
    HookTarget(#[from] UrlError),
    #[error("{0} (set engine.sandbox_command to the orchestrator binary)")]
    Sandbox(#[from] SandboxError),
}

/// A built server, bound to its port, not yet serving.
pub struct App {
    server: actix_web::dev::Server,
    address: SocketAddr,
    engine: Engine,
    hooks: Hooks,
    scheduler: Scheduler,
    feed: Feed,
    store: DynStore,
}

/// On shutdown, how long hook delivery gets to record what was acknowledged.
const HOOKS_GRACE: Duration = Duration::from_secs(5);

/// On shutdown, how long HTTP requests may run beyond `server.shutdown_grace` (log streams
/// stay open until the runs they follow have drained).
const HTTP_MARGIN: Duration = Duration::from_secs(10);

/// How long an idle client connection stays open: longer than the shipped clients (the
/// CLI, the worker) keep theirs, 30 s. A client that sends on a connection the server is
/// closing at that moment loses the request ("connection closed before message
/// completed"), and a `POST` must not blindly be sent again.
pub const HTTP_KEEP_ALIVE: Duration = Duration::from_secs(75);

/// The validator a server with `config` uses: its workflow schema, its actions and its
/// limits. `orchestrator validate` checks files with the same one.
pub fn validator(config: &Config, actions: &Registry) -> Result<Validator, SchemaError> {
    let schema = WorkflowSchema::load(config.workflow_schema.as_deref())?;
    Ok(Validator::new(
        schema,
        Arc::new(actions.clone()),
        Limits {
            max_steps: config.limits.max_steps,
            max_retries: config.limits.max_retries,
            max_input_bytes: config.limits.max_input_bytes,
        },
        config.requires_approval,
    )
    .with_secrets(config.secrets.keys().cloned()))
}

/// Opens the store the configuration names and applies its migrations.
pub async fn open_store(config: &Config) -> Result<DynStore, StartError> {
    match &config.store {
        StoreConfig::Sqlite { path, options } => {
            Ok(Arc::new(SqliteStore::open_with(path, options)?))
        }
        StoreConfig::Postgres {
            dsn,
            pool_size,
            statement_timeout,
        } => Ok(Arc::new(
            PostgresStore::open(&PgOptions {
                dsn: dsn.expose().to_owned(),
                pool_size: *pool_size,
                statement_timeout: *statement_timeout,
            })
            .await?,
        )),
    }
}

/// Makes this process the one holding `server_id` on the store, and lets the leases a
/// previous process with that id left behind expire, so that its runs resume at once
/// (rather than after `engine.lease_ttl`).
async fn claim_identity(store: &DynStore, server_id: &str) -> Result<(), StartError> {
    store.hold_identity(server_id).await?;
    let orphaned = store.expire_leases(server_id).await?;
    if orphaned > 0 {
        tracing::info!(
            server_id,
            runs = orphaned,
            "resuming the runs this server id held before its restart"
        );
    }
    Ok(())
}

impl App {
    /// Builds everything and binds `server.host:server.port` (port 0 picks a free one).
    /// Must be called within a Tokio runtime, which then runs the engine's tasks.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new()?);
        let store: DynStore = Arc::new(TimedStore::new(open_store(&config).await?, &metrics));
        let server_id = config.server.id.clone();
        claim_identity(&store, &server_id).await?;
        let client = HttpClient::with_options(ClientOptions {
            policy: Some(config.outbound.clone()),
            max_body_bytes: config.limits.max_output_bytes,
        })
        .map_err(StartError::Client)?;
        // Hooks go only to URLs the operator configured: the outbound policy, which guards
        // against targets in workflow definitions, does not apply to them.
        let hooks_client = HttpClient::with_options(ClientOptions {
            policy: None,
            ..ClientOptions::default()
        })
        .map_err(StartError::Client)?;
        let hook_targets = crate::hooks::targets(&config.services, &config.hooks)?;
        let actions = Registry::new(&config.services, client);
        metrics.know_actions(actions.names());
        let validator = Arc::new(validator(&config, &actions)?);
        let pack = Arc::new(Pack::load(config.templates_path.as_deref(), &validator)?);
        let hub = Arc::new(LogHub::with_capacity(config.logs.feed_capacity));
        crate::expr::set_budget(config.limits.template);
        let sandbox = Arc::new(Sandbox::new(SandboxSettings {
            command: config.engine.sandbox_command.clone(),
            budget: config.limits.template,
            memory_bytes: config.limits.template_memory_bytes,
            time: config.limits.template_time,
            processes: config.engine.sandbox_processes,
        }));
        sandbox.check().await?;
        let settings = Settings {
            max_active_runs: config.engine.max_active_runs,
            lease_ttl: config.engine.lease_ttl,
            poll_interval: config.engine.poll_interval,
            idempotency_ttl: config.engine.idempotency_ttl,
            secrets: Arc::new(config.secrets.clone()),
            redactor: Redactor::new(config.secrets.values()),
            max_log_entries: config.logs.max_entries_per_run,
            limits: RunLimits {
                max_input_bytes: config.limits.max_input_bytes,
                max_context_bytes: config.limits.max_context_bytes,
                max_output_bytes: config.limits.max_output_bytes,
                run_tokens: config.limits.run_tokens,
                foreach_items: config.limits.foreach_items,
            },
            shutdown_grace: config.server.shutdown_grace,
            clock: crate::clock::Clock::system(),
            run_retention: config.retention.runs,
            retention_interval: config.retention.interval,
        };
        let parts = Parts {
            store: store.clone(),
            validator: validator.clone(),
            actions,
            sandbox,
            hub,
            metrics: metrics.clone(),
            owner: server_id.clone(),
        };
        let engine = Engine::new(parts, settings);
        engine.start();
        let hook_names: Vec<&'static str> = hook_targets.iter().map(|t| t.name).collect();
        let hooks = Hooks::start(
            store.clone(),
            hooks_client,
            hook_targets,
            HookRuntime {
                settings: config.hooks.clone(),
                holder: server_id.clone(),
                lease_ttl: config.engine.lease_ttl,
                retention: config.retention.clone(),
                metrics: metrics.clone(),
            },
        );
        let scheduler = Scheduler::start(
            store.clone(),
            engine.clone(),
            metrics.clone(),
            SchedulerSettings {
                poll_interval: config.triggers.poll_interval,
                misfire_grace: config.triggers.misfire_grace,
            },
        );
        // The feed reads the outbox as often as hook delivery does when idle.
        let feed = Feed::start(store.clone(), config.hooks.poll_interval);
        let state = web::Data::new(AppState {
            store: store.clone(),
            engine: engine.clone(),
            validator,
            pack,
            limits: config.limits.clone(),
            logs: config.logs.clone(),
            log_streams: Arc::new(Semaphore::new(config.logs.max_streams)),
            metrics: metrics.clone(),
            auth: config.auth.clone().into(),
            hook_targets: hook_names,
            hooks: hooks.clone(),
            cors_origins: config.server.cors_origins.clone().into(),
            scheduler: scheduler.clone(),
            feed: feed.clone(),
            triggers: config.triggers.clone(),
            server: ServerInfo {
                id: server_id.clone(),
                store: match config.store {
                    StoreConfig::Sqlite { .. } => "sqlite",
                    StoreConfig::Postgres { .. } => "postgres",
                },
                lease_ttl: config.engine.lease_ttl,
                retention: config.retention.clone(),
            },
        });
        let address = config.bind_address();
        let listener = TcpListener::bind(&address).map_err(|source| StartError::Bind {
            address: address.clone(),
            source,
        })?;
        let bound = listener.local_addr().map_err(|source| StartError::Bind {
            address: address.clone(),
            source,
        })?;
        let mut server = HttpServer::new(move || {
            // The last `wrap` runs first: every request gets its id and span before the
            // token check, so refusals are logged and measured too; preflights are answered
            // before it (they carry no token); query parameters are checked after it.
            ActixApp::new()
                .app_data(state.clone())
                .wrap(from_fn(api::params::strict_query))
                .wrap(from_fn(api::auth::authorize))
                .wrap(from_fn(api::cors::cors))
                .wrap(from_fn(api::observe::observe))
                .configure(api::configure)
        })
        .disable_signals()
        // Without it a streamed response (the SSE log stream) waits on delayed ACKs:
        // an event written while the previous one is unacknowledged left ~40 ms late.
        .tcp_nodelay(true)
        .keep_alive(HTTP_KEEP_ALIVE)
        .shutdown_timeout((config.server.shutdown_grace + HTTP_MARGIN).as_secs());
        if config.server.workers > 0 {
            server = server.workers(config.server.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartError::Bind { address, source })?
            .run();
        tracing::info!(address = %bound, server_id = %server_id, "orchestrator listening");
        Ok(Self {
            server,
            address: bound,
            engine,
            hooks,
            scheduler,
            feed,
            store,
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The store the server uses.
    pub fn store(&self) -> DynStore {
        self.store.clone()
    }

    /// The engine the server uses.
    pub fn engine(&self) -> Engine {
        self.engine.clone()
    }

    /// The hook delivery tasks and their counts.
    pub fn hooks(&self) -> Hooks {
        self.hooks.clone()
    }

    /// Serves until `shutdown` completes, then stops in this order:
    /// 1. the listener closes (requests in progress go on) and schedules stop firing;
    /// 2. the engine drains: no new steps, steps in flight get `server.shutdown_grace`,
    ///    their results are committed, and unfinished runs are released to resume on the
    ///    next start; log and event streams stay open meanwhile, then end with a
    ///    `shutdown` event;
    /// 3. hook delivery stops, after the engine so that the events of its last commits
    ///    are in the outbox (delivered after the next start);
    /// 4. the HTTP server waits for the remaining requests.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        shutdown.await;
        tracing::info!("shutting down: no new connections");
        let stopping = handle.stop(true);
        self.scheduler.shutdown().await;
        self.engine.shutdown().await;
        self.feed.close();
        self.hooks.shutdown(HOOKS_GRACE).await;
        stopping.await;
        let served = server.await.map_err(std::io::Error::other)?;
        if let Err(e) = self.store.close().await {
            tracing::warn!(error = %crate::problems::chain(&e), "closing the store failed");
        }
        tracing::info!("stopped");
        served
    }
}
