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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::actions::{Body, Failure, FailureKind, HttpClient, Request};
use crate::config::{Config, RawHooks, Service};
use crate::store::{DynStore, StoredEvent};

/// Where one kind of hook goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The config section (`memarch`, `audit_log`); also the name of the outbox cursor.
    pub name: &'static str,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    /// Per delivery attempt.
    pub timeout: Duration,
}

/// The hook targets `config` enables: each section with a `base_url` and a non-empty path.
pub fn targets(config: &Config) -> Result<Vec<Target>, String> {
    let sections: [(&'static str, &Service, &str); 2] = [
        (
            "memarch",
            &config.services.memarch,
            &config.hooks.memarch_path,
        ),
        (
            "audit_log",
            &config.services.audit_log,
            &config.hooks.audit_log_path,
        ),
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
            url: crate::actions::join_url(base, path).map_err(|e| format!("hooks: {e}"))?,
            headers: service
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
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
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failures: AtomicU64,
    dropped: AtomicU64,
    cursor: AtomicU64,
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
    /// Starts one delivery task per target (none when `targets` is empty). Must be called
    /// within a Tokio runtime.
    pub fn start(
        store: DynStore,
        client: HttpClient,
        targets: Vec<Target>,
        settings: RawHooks,
    ) -> Self {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut counters = Vec::new();
        for target in targets {
            let mine = Arc::new(Counters::default());
            counters.push((target.name, mine.clone()));
            let worker = Worker {
                store: store.clone(),
                client: client.clone(),
                target,
                settings: settings.clone(),
                counters: mine,
                stop: stop.clone(),
            };
            tasks.spawn(worker.run());
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

/// The delivery loop of one target.
struct Worker {
    store: DynStore,
    client: HttpClient,
    target: Target,
    settings: RawHooks,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

impl Worker {
    async fn run(self) {
        let name = self.target.name;
        let mut cursor = loop {
            match self.store.event_cursor(name).await {
                Ok(cursor) => break cursor,
                Err(e) => tracing::warn!(target = name, error = %e, "cannot read the hook cursor"),
            }
            if self.pause(self.settings.max_backoff).await {
                return;
            }
        };
        self.counters.cursor.store(cursor, Ordering::Relaxed);
        tracing::info!(target = name, url = %self.target.url, cursor, "delivering hooks");
        while !self.stop.is_cancelled() {
            let batch = match self
                .store
                .read_events(cursor, self.settings.batch_size)
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(target = name, error = %e, "cannot read the hook outbox");
                    self.pause(self.settings.max_backoff).await;
                    continue;
                }
            };
            if batch.is_empty() {
                self.pause(self.settings.poll_interval).await;
                continue;
            }
            let acked = self.deliver_batch(&batch).await;
            let mark = watermark(cursor, &acked);
            if mark > cursor {
                cursor = mark;
                // A failed write only means redelivery after a restart; the next batch's
                // write covers this one too.
                if let Err(e) = self.store.set_event_cursor(name, cursor).await {
                    tracing::warn!(target = name, error = %e, "cannot record the hook cursor");
                }
                self.counters.cursor.store(cursor, Ordering::Relaxed);
            }
        }
    }

    /// Sleeps for `delay`; true when the worker is stopping instead.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = self.stop.cancelled() => true,
        }
    }

    /// Delivers a batch, runs in parallel and each run's events in order, until all are
    /// acknowledged or the worker stops. Returns how many of each run's events were.
    async fn deliver_batch(&self, batch: &[StoredEvent]) -> Vec<(u64, bool)> {
        let groups = by_run(batch);
        let done: Vec<AtomicUsize> = groups.iter().map(|_| AtomicUsize::new(0)).collect();
        let work = futures::StreamExt::for_each_concurrent(
            futures::stream::iter(groups.iter().zip(&done)),
            self.settings.concurrency,
            |(events, done)| async move {
                for event in events {
                    self.deliver(event).await;
                    done.fetch_add(1, Ordering::Release);
                }
            },
        );
        tokio::select! {
            _ = work => {}
            _ = self.stop.cancelled() => {}
        }
        let mut acked: Vec<(u64, bool)> = groups
            .iter()
            .zip(&done)
            .flat_map(|(events, done)| {
                let n = done.load(Ordering::Acquire);
                events.iter().enumerate().map(move |(i, e)| (e.id, i < n))
            })
            .collect();
        acked.sort_unstable();
        acked
    }

    /// Delivers one event, retrying until it is acknowledged (or dropped after
    /// `hooks.max_attempts`).
    async fn deliver(&self, event: &StoredEvent) {
        let name = self.target.name;
        let mut attempt: u32 = 1;
        loop {
            let error = match self.post(event).await {
                Ok(()) => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(error) => error,
            };
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            if self.settings.max_attempts > 0 && attempt >= self.settings.max_attempts {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target = name, run_id = %event.run_id, seq = event.seq, attempt,
                    error = %error.message, "hook event dropped after its last attempt");
                return;
            }
            let wait = delay(&self.settings, attempt, error.retry_after, rand::random());
            tracing::warn!(target = name, run_id = %event.run_id, seq = event.seq, attempt,
                retry_in_ms = wait.as_millis() as u64, error = %error.message,
                "hook delivery failed");
            tokio::time::sleep(wait).await;
            attempt = attempt.saturating_add(1);
        }
    }

    /// One POST of one event; `Ok` when the target answered 2xx.
    async fn post(&self, event: &StoredEvent) -> Result<(), Failure> {
        let request = Request {
            method: reqwest::Method::POST,
            url: self.target.url.clone(),
            headers: self.target.headers.clone(),
            query: Vec::new(),
            body: Some(Body::Json(payload(event))),
            idempotency_key: format!("{}/events/{}", event.run_id, event.seq),
        };
        match tokio::time::timeout(self.target.timeout, self.client.send(request)).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(Failure {
                kind: FailureKind::Timeout,
                message: format!("timed out after {} ms", self.target.timeout.as_millis()),
                http_code: None,
                retry_after: None,
                output: None,
            }),
        }
    }
}

/// The JSON body of one event: `{type, run_id, workflow_id, step?, status, ts, seq}`.
pub fn payload(event: &StoredEvent) -> Value {
    let mut body = Map::new();
    body.insert("type".into(), event.event.kind.clone().into());
    body.insert("run_id".into(), event.run_id.clone().into());
    body.insert("workflow_id".into(), event.workflow_id.clone().into());
    if let Some(step) = &event.event.step {
        body.insert("step".into(), step.clone().into());
    }
    body.insert("status".into(), event.event.status.clone().into());
    body.insert(
        "ts".into(),
        event
            .event
            .ts
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    body.insert("seq".into(), event.seq.into());
    Value::Object(body)
}

/// The batch's events grouped by run, each group in outbox order.
fn by_run(batch: &[StoredEvent]) -> Vec<Vec<&StoredEvent>> {
    let mut index: std::collections::HashMap<&str, usize> = Default::default();
    let mut groups: Vec<Vec<&StoredEvent>> = Vec::new();
    for event in batch {
        let i = *index.entry(&event.run_id).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(event);
    }
    groups
}

/// The highest outbox position up to which every event of the batch is acknowledged;
/// `acked` is the batch's `(id, acknowledged)` sorted by id.
fn watermark(cursor: u64, acked: &[(u64, bool)]) -> u64 {
    acked
        .iter()
        .take_while(|(_, ok)| *ok)
        .last()
        .map_or(cursor, |(id, _)| *id)
}

/// The wait before attempt `attempt + 1`: `backoff` doubling per failure, at least the
/// target's `Retry-After`, at most `max_backoff`, with the upper half jittered so that
/// many runs retrying against one target spread out. `random` is in `[0, 1)`.
fn delay(
    settings: &RawHooks,
    attempt: u32,
    retry_after: Option<Duration>,
    random: f64,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let base = settings
        .backoff
        .saturating_mul(1u32 << exponent.min(31))
        .min(settings.max_backoff);
    let jittered = base / 2 + base.mul_f64(random.clamp(0.0, 1.0) / 2.0);
    jittered
        .max(retry_after.unwrap_or_default())
        .min(settings.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewEvent;

    fn event(id: u64, run: &str, seq: u64) -> StoredEvent {
        StoredEvent {
            id,
            run_id: run.into(),
            workflow_id: "wf".into(),
            seq,
            event: NewEvent {
                kind: "step.started".into(),
                step: Some("a".into()),
                status: "RUNNING".into(),
                ts: crate::model::now(),
            },
        }
    }

    #[test]
    fn events_are_grouped_by_run_in_outbox_order() {
        let batch = [event(1, "r1", 1), event(2, "r2", 1), event(3, "r1", 2)];
        let groups = by_run(&batch);
        let ids: Vec<Vec<u64>> = groups
            .iter()
            .map(|g| g.iter().map(|e| e.id).collect())
            .collect();
        assert_eq!(ids, [vec![1, 3], vec![2]]);
    }

    #[test]
    fn the_cursor_stops_before_the_first_unacknowledged_event() {
        assert_eq!(watermark(4, &[(5, true), (6, false), (7, true)]), 5);
        assert_eq!(watermark(4, &[(5, false), (6, true)]), 4);
        assert_eq!(watermark(4, &[(5, true), (6, true)]), 6);
    }

    #[test]
    fn backoff_doubles_is_capped_and_honours_retry_after() {
        let s = RawHooks {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..RawHooks::default()
        };
        assert_eq!(delay(&s, 1, None, 0.0), Duration::from_millis(50));
        assert_eq!(delay(&s, 1, None, 0.999_999).as_millis(), 99);
        assert_eq!(delay(&s, 3, None, 0.0), Duration::from_millis(200));
        assert_eq!(delay(&s, 40, None, 0.0), Duration::from_millis(500));
        let retry_after = Some(Duration::from_millis(700));
        assert_eq!(delay(&s, 1, retry_after, 0.0), Duration::from_millis(700));
        let retry_after = Some(Duration::from_secs(60));
        assert_eq!(delay(&s, 1, retry_after, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn the_payload_has_the_documented_fields() {
        let body = payload(&event(9, "run_1", 3));
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "type",
                "run_id",
                "workflow_id",
                "step",
                "status",
                "ts",
                "seq"
            ]
        );
        assert_eq!(body["seq"], 3);
    }
}
