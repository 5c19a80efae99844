//! The lease fence: a run's task starts a call only while its lease is valid by this
//! server's own clock.
//!
//! Ownership is proven by a write the store guarded by owner: the claim or creation that
//! took the lease, a commit of the run's task (its guard names this server, and it renews
//! the lease), or a heartbeat renewal that names the run. A run proven ours at instant `t` stays ours until `t + lease_ttl`,
//! since nobody may claim it before its lease expires; the fence trusts it until
//! `t + lease_ttl - margin`, the margin covering clock skew between replicas. A server that
//! missed its renewals (a long pause, a partition from the database) therefore stops
//! calling out before another replica can have taken its runs over, and goes on only once
//! a renewal or commit proves the run is still its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The part of the lease not trusted, for clock skew between replicas: a fifth.
fn margin(ttl: Duration) -> Duration {
    ttl / 5
}

/// The fence of one run.
#[derive(Debug)]
pub struct Fence {
    /// Where the instants below count from.
    base: Instant,
    /// Milliseconds after `base` until which the lease is trusted.
    until_ms: AtomicU64,
    trusted_for: Duration,
    proven: Notify,
}

impl Fence {
    /// A fence not yet proven: calls wait for the first proof.
    fn new(ttl: Duration) -> Self {
        Self {
            base: Instant::now(),
            until_ms: AtomicU64::new(0),
            trusted_for: ttl.saturating_sub(margin(ttl)),
            proven: Notify::new(),
        }
    }

    /// The store confirmed the run was ours at `at` (taken before the write was sent).
    pub fn prove(&self, at: Instant) {
        let until = (at + self.trusted_for)
            .duration_since(self.base)
            .as_millis() as u64;
        self.until_ms.fetch_max(until, Ordering::AcqRel);
        self.proven.notify_waiters();
    }

    /// True while the lease is trusted.
    pub fn is_valid(&self) -> bool {
        self.valid_at(Instant::now())
    }

    /// True when the lease is trusted at `at`.
    fn valid_at(&self, at: Instant) -> bool {
        let at = at.saturating_duration_since(self.base).as_millis() as u64;
        at < self.until_ms.load(Ordering::Acquire)
    }

    /// Waits until the lease is trusted; false when `stopping` is cancelled first.
    pub async fn wait_valid(&self, stopping: &CancellationToken) -> bool {
        let mut warned = false;
        loop {
            let proven = self.proven.notified();
            if self.is_valid() {
                return true;
            }
            if !warned {
                tracing::warn!("the run's lease is not confirmed; no call starts until it is");
                warned = true;
            }
            tokio::select! {
                _ = proven => {}
                // Checked again now and then: the clock moves on without a notification.
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stopping.cancelled() => return false,
            }
        }
    }
}

/// The fences of the runs this server executes.
#[derive(Debug)]
pub struct Fences {
    ttl: Duration,
    by_run: Mutex<HashMap<String, Arc<Fence>>>,
}

impl Fences {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            by_run: Mutex::default(),
        }
    }

    /// The fence of `run_id`, created unproven for a run that starts executing here.
    pub fn of(&self, run_id: &str) -> Arc<Fence> {
        let mut map = self.by_run.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(run_id.to_owned())
            .or_insert_with(|| Arc::new(Fence::new(self.ttl)))
            .clone()
    }

    /// The run no longer executes here.
    pub fn forget(&self, run_id: &str) {
        let mut map = self.by_run.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(run_id);
    }

    /// A renewal sent at `at` confirmed `renewed`; returns the runs executing here whose
    /// lease is no longer trusted (they must check whether they are still theirs).
    pub fn renewed(&self, renewed: &[String], at: Instant) -> Vec<String> {
        let map = self.by_run.lock().unwrap_or_else(|p| p.into_inner());
        for id in renewed {
            if let Some(fence) = map.get(id) {
                fence.prove(at);
            }
        }
        map.iter()
            .filter(|(_, fence)| !fence.is_valid())
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_trusted_for_the_lease_minus_the_margin() {
        let fences = Fences::new(Duration::from_secs(10));
        let fence = fences.of("run_1");
        let t0 = Instant::now();
        assert!(!fence.valid_at(t0), "unproven until the store confirms");
        fence.prove(t0);
        assert!(fence.valid_at(t0 + Duration::from_millis(7_900)));
        assert!(
            !fence.valid_at(t0 + Duration::from_millis(8_100)),
            "past ttl - margin (8 s)"
        );
        fence.prove(t0 - Duration::from_secs(5));
        assert!(
            fence.valid_at(t0 + Duration::from_millis(7_900)),
            "an older proof never shortens it"
        );
    }

    #[test]
    fn a_renewal_proves_only_the_runs_it_names_and_reports_the_others() {
        let fences = Fences::new(Duration::from_secs(10));
        let (a, b) = (fences.of("a"), fences.of("b"));
        let stale = fences.renewed(&["a".to_owned()], Instant::now());
        assert!(a.is_valid() && !b.is_valid());
        assert_eq!(stale, ["b"]);
        fences.forget("b");
        assert!(fences.renewed(&[], Instant::now()).is_empty());
    }

    #[tokio::test]
    async fn a_call_waits_for_a_proof_and_gives_up_when_the_server_stops() {
        let fence = Arc::new(Fence::new(Duration::from_secs(10)));
        let stopping = CancellationToken::new();
        let waiting = tokio::spawn({
            let (fence, stopping) = (fence.clone(), stopping.clone());
            async move { fence.wait_valid(&stopping).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        fence.prove(Instant::now());
        assert!(waiting.await.unwrap(), "goes on once proven");

        let unproven = Arc::new(Fence::new(Duration::from_secs(10)));
        let waiting = tokio::spawn({
            let stopping = stopping.clone();
            async move { unproven.wait_valid(&stopping).await }
        });
        stopping.cancel();
        assert!(!waiting.await.unwrap(), "gives up when the server stops");
    }
}
