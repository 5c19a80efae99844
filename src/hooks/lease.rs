//! The delivery lease of one hook target: replicas sharing a store deliver a target's
//! events only while they hold its lease, so each event goes out once, not once per
//! replica.
//!
//! The holder renews the lease every third of its time to live. It trusts the lease only
//! until its last renewal (timed from before the renewal was sent) plus the time to live
//! minus a fifth, the margin covering clock skew between replicas; past that, delivery
//! stops at once, in-flight POSTs are abandoned, and the target waits for whoever takes
//! the lease next, which starts from the stored cursor.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::DynStore;

/// The lease of one target, as one server holds it.
#[derive(Clone)]
pub struct TargetLease {
    store: DynStore,
    target: &'static str,
    holder: String,
    ttl: Duration,
}

impl TargetLease {
    pub fn new(store: DynStore, target: &'static str, holder: String, ttl: Duration) -> Self {
        Self {
            store,
            target,
            holder,
            ttl,
        }
    }

    /// How long a renewal sent at `at` is trusted.
    fn trusted_until(&self, at: Instant) -> Instant {
        at + self.ttl - self.ttl / 5
    }

    /// Tries to take or renew the lease: until when it is trusted when held, `None` when
    /// another server holds it, `Err` when the store did not answer.
    async fn hold(&self) -> Result<Option<Instant>, ()> {
        let sent = Instant::now();
        match self
            .store
            .hold_hook_lease(self.target, &self.holder, self.ttl)
            .await
        {
            Ok(true) => Ok(Some(self.trusted_until(sent))),
            Ok(false) => Ok(None),
            Err(e) => {
                tracing::warn!(target = self.target, error = %crate::problems::chain(&e),
                    "cannot take the hook delivery lease");
                Err(())
            }
        }
    }

    /// Waits until this server holds the lease and returns until when it is trusted;
    /// `None` when `stop` comes first.
    pub async fn acquire(&self, stop: &CancellationToken) -> Option<Instant> {
        loop {
            if let Ok(Some(until)) = self.hold().await {
                tracing::info!(target = self.target, holder = %self.holder,
                    "holding the hook delivery lease");
                return Some(until);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.ttl / 3) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Renews the lease until `held` is cancelled; cancels `held` itself once the lease is
    /// no longer trusted (lost to another replica, or not renewed in time).
    pub async fn keep(&self, mut until: Instant, held: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.ttl / 3) => {}
                _ = tokio::time::sleep_until(until) => break,
                _ = held.cancelled() => return,
            }
            match self.hold().await {
                Ok(Some(renewed)) => until = renewed,
                Ok(None) => break,
                // Not renewed this time; trusted until `until` still.
                Err(()) => {}
            }
        }
        tracing::warn!(
            target = self.target,
            "hook delivery lease lost; delivery pauses here"
        );
        held.cancel();
    }

    /// Gives the lease up, so that another replica delivers at once.
    pub async fn release(&self) {
        if let Err(e) = self
            .store
            .release_hook_lease(self.target, &self.holder)
            .await
        {
            tracing::warn!(target = self.target, error = %crate::problems::chain(&e),
                "cannot release the hook delivery lease");
        }
    }
}
