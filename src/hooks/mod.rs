//! Event hooks: run and step events delivered from the store's outbox to `memarch` and
//! `audit_log` (`<base_url>` + `hooks.<target>_path`, one JSON event per POST).
//!
//! The engine writes events in the same commit as the change they describe, so the outbox
//! holds exactly what happened and costs a run nothing more. One delivery task per target
//! reads the events after that target's durable cursor, delivers them (each run's events
//! in order, several runs at once), retries each until it is acknowledged with a 2xx, and
//! only then moves the cursor past them. A slow or dead endpoint therefore delays only its
//! own deliveries, never a run. Delivery is at least once: events acknowledged after the
//! last cursor update are sent again after a crash, so receivers de-duplicate on
//! `(run_id, seq)`, which is also sent as `Idempotency-Key: <run id>/events/<seq>`.
//!
//! Replicas sharing a store deliver each target's events once: only the holder of the
//! target's lease in the store delivers (see [`lease`]); another replica takes over when
//! the holder stops (at once after a clean stop, after `engine.lease_ttl` after a crash).
//! Events every target has acknowledged are pruned after `retention.hook_events`
//! ([`prune`]).

mod lease;
mod prune;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::config::{HookSettings, RetentionSettings, ServiceSection, Services};
use crate::metrics::Metrics;
use crate::outbound::{HttpClient, UrlError, join};
use crate::secret::Secret;
use crate::store::DynStore;

use worker::Worker;
pub use worker::payload;

/// Where one kind of hook goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The config section (`memarch`, `audit_log`); also the name of the outbox cursor.
    pub name: &'static str,
    pub url: Url,
    pub headers: Vec<(String, Secret)>,
    /// Per delivery attempt.
    pub timeout: Duration,
}

/// The hook targets the configuration enables: each section with a `base_url` and a
/// non-empty path.
pub fn targets(services: &Services, settings: &HookSettings) -> Result<Vec<Target>, UrlError> {
    let sections: [(&'static str, &ServiceSection, &str); 2] = [
        ("memarch", &services.memarch, &settings.memarch_path),
        ("audit_log", &services.audit_log, &settings.audit_log_path),
    ];
    let mut out = Vec::new();
    for (name, service, path) in sections {
        let Some(base) = &service.base_url else {
            continue;
        };
        if path.is_empty() {
            continue;
        }
        out.push(Target {
            name,
            url: join(base, path)?,
            headers: service.headers.clone(),
            timeout: service.timeout,
        });
    }
    Ok(out)
}

/// Delivery counts of one target since start, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookCounts {
    pub target: &'static str,
    /// Events acknowledged.
    pub delivered: u64,
    /// Failed attempts (each is logged).
    pub failures: u64,
    /// Events given up after `hooks.max_attempts`.
    pub dropped: u64,
    /// The outbox position acknowledged up to.
    pub cursor: u64,
    /// This server holds the target's delivery lease: it is the replica delivering.
    pub delivering: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    delivered: AtomicU64,
    failures: AtomicU64,
    dropped: AtomicU64,
    cursor: AtomicU64,
    delivering: AtomicBool,
}

/// What delivery needs besides its targets.
#[derive(Clone)]
pub struct HookRuntime {
    pub settings: HookSettings,
    /// This server's id: the holder of the target leases it takes.
    pub holder: String,
    /// How long a target's lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How long acknowledged events are kept.
    pub retention: RetentionSettings,
    pub metrics: Arc<Metrics>,
}

/// The running delivery tasks; cheap to clone.
#[derive(Clone)]
pub struct Hooks {
    counters: Arc<Vec<(&'static str, Arc<Counters>)>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.counts()).finish()
    }
}

impl Hooks {
    /// Starts one delivery task per target (none when `targets` is empty) and the pruning
    /// of acknowledged events. Must be called within a Tokio runtime.
    pub fn start(
        store: DynStore,
        client: HttpClient,
        targets: Vec<Target>,
        runtime: HookRuntime,
    ) -> Self {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut counters = Vec::new();
        let names: Vec<&'static str> = targets.iter().map(|t| t.name).collect();
        for target in targets {
            let mine = Arc::new(Counters::default());
            counters.push((target.name, mine.clone()));
            let worker = Worker {
                store: store.clone(),
                client: client.clone(),
                lease: lease::TargetLease::new(
                    store.clone(),
                    target.name,
                    runtime.holder.clone(),
                    runtime.lease_ttl,
                ),
                target,
                settings: runtime.settings.clone(),
                counters: mine,
                stop: stop.clone(),
            };
            tasks.spawn(worker.run());
        }
        if let Some(keep) = runtime.retention.hook_events {
            let pruner = prune::Pruner {
                store,
                targets: names,
                keep,
                every: runtime.retention.interval,
                metrics: runtime.metrics,
                stop: stop.clone(),
            };
            tasks.spawn(pruner.run());
        }
        tasks.close();
        Self {
            counters: Arc::new(counters),
            stop,
            tasks,
        }
    }

    /// The counts of every target.
    pub fn counts(&self) -> Vec<HookCounts> {
        self.counters
            .iter()
            .map(|(target, c)| HookCounts {
                target,
                delivered: c.delivered.load(Ordering::Relaxed),
                failures: c.failures.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
                cursor: c.cursor.load(Ordering::Relaxed),
                delivering: c.delivering.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Stops delivering: in-flight POSTs are abandoned (their events are sent again on the
    /// next start), what was acknowledged is recorded, and the tasks end within `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("hook delivery did not stop within the grace period");
        }
    }
}
