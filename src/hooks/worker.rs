//! The delivery loop of one hook target: while this server holds the target's lease, read
//! the outbox after the target's cursor, deliver each run's events in order (several runs
//! at once), retry until acknowledged, then record the new cursor. Stopping (or losing the
//! lease) abandons in-flight POSTs; only events known to be acknowledged move the cursor,
//! so nothing is lost, at worst sent twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::lease::TargetLease;
use super::{Counters, Target};
use crate::config::HookSettings;
use crate::outbound::{Body, Failure, HttpClient, Jitter, Request};
use crate::store::{DynStore, StoredEvent};

/// The delivery loop of one target.
pub(super) struct Worker {
    pub store: DynStore,
    pub client: HttpClient,
    pub target: Target,
    pub lease: TargetLease,
    pub settings: HookSettings,
    pub counters: Arc<Counters>,
    pub stop: CancellationToken,
}

impl Worker {
    /// Delivers while this server holds the target's lease, until stopped; gives the
    /// lease up on the way out.
    pub async fn run(self) {
        let name = self.target.name;
        loop {
            let Some(until) = self.lease.acquire(&self.stop).await else {
                return;
            };
            let held = self.stop.child_token();
            let keeper = tokio::spawn({
                let (lease, held) = (self.lease.clone(), held.clone());
                async move { lease.keep(until, held).await }
            });
            self.counters.delivering.store(true, Ordering::Relaxed);
            self.deliver_while(&held).await;
            self.counters.delivering.store(false, Ordering::Relaxed);
            held.cancel();
            let _ = keeper.await;
            if self.stop.is_cancelled() {
                self.lease.release().await;
                return;
            }
            tracing::warn!(
                target = name,
                "hook delivery paused until the lease is held again"
            );
        }
    }

    /// Delivers from the stored cursor until `held` is cancelled.
    async fn deliver_while(&self, held: &CancellationToken) {
        let name = self.target.name;
        let mut cursor = loop {
            match self.store.event_cursor(name).await {
                Ok(cursor) => break cursor,
                Err(e) => tracing::warn!(target = name, error = %e, "cannot read the hook cursor"),
            }
            if pause(self.settings.backoff.max, held).await {
                return;
            }
        };
        self.counters.cursor.store(cursor, Ordering::Relaxed);
        tracing::info!(target = name, url = %self.target.url, cursor, "delivering hooks");
        while !held.is_cancelled() {
            let batch = match self
                .store
                .read_events(cursor, self.settings.batch_size)
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(target = name, error = %e, "cannot read the hook outbox");
                    pause(self.settings.backoff.max, held).await;
                    continue;
                }
            };
            if batch.is_empty() {
                pause(self.settings.poll_interval, held).await;
                continue;
            }
            let acked = self.deliver_batch(&batch, held).await;
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

    /// Delivers a batch, runs in parallel and each run's events in order, until all are
    /// acknowledged or the worker stops. Returns how many of each run's events were.
    async fn deliver_batch(
        &self,
        batch: &[StoredEvent],
        held: &CancellationToken,
    ) -> Vec<(u64, bool)> {
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
            _ = held.cancelled() => {}
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
            headers: self
                .target
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            query: Vec::new(),
            body: Some(Body::Json(payload(event))),
            idempotency_key: format!("{}/events/{}", event.run_id, event.seq),
        };
        match tokio::time::timeout(self.target.timeout, self.client.send(request)).await {
            Ok(Ok(_)) => Ok(()),
            // A 2xx is an acknowledgement whatever its body says.
            Ok(Err(f)) if f.http_code.is_some_and(|c| (200..300).contains(&c)) => Ok(()),
            Ok(Err(f)) => Err(f),
            Err(_) => Err(Failure::timed_out(self.target.timeout)),
        }
    }
}

/// Sleeps for `delay`; true when `held` is cancelled instead.
async fn pause(delay: Duration, held: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = held.cancelled() => true,
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

/// The wait before attempt `attempt + 1`: the settings' backoff with its upper half
/// jittered (so that many runs retrying against one target spread out), at least the
/// target's `Retry-After`, never past the cap. `random` is in `[0, 1)`.
fn delay(
    settings: &HookSettings,
    attempt: u32,
    retry_after: Option<Duration>,
    random: f64,
) -> Duration {
    let backoff = &settings.backoff;
    backoff
        .jittered(attempt, Jitter::Half, random)
        .max(retry_after.unwrap_or_default())
        .min(backoff.max)
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
        let raw = crate::config::raw::RawHooks {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..Default::default()
        };
        let s = crate::config::Config::from_raw(
            std::path::Path::new("t"),
            crate::config::RawConfig {
                hooks: raw,
                ..Default::default()
            },
        )
        .unwrap()
        .hooks;
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
