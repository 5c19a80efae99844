//! The store's lifecycle: what keeps a long-lived store healthy and shared safely.
//!
//! - Write health: whether the store takes writes (readiness tells the truth while a
//!   disk is full or a database is read-only), recovering on its own.
//! - Server identity: one live process per `server.id`, whose restart resumes its own
//!   runs at once.
//! - Retention: finished runs and acknowledged hook events deleted by age, in small
//!   batches.
//! - Hook delivery leases: one replica delivers each target's events.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;
use crate::model::{Timestamp, WriteStats};

/// The lifecycle operations every [`super::Store`] provides.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// `Ok` when the store takes writes. After a write failed, a small probe write
    /// decides (so readiness recovers by itself once the cause is gone).
    async fn writable(&self) -> Result<(), StoreError>;

    /// Claims server identity `id` for this process, for as long as the store is open;
    /// `Conflict` when another live process holds it on this store.
    async fn hold_identity(&self, id: &str) -> Result<(), StoreError>;

    /// Lets `owner`'s leases expire now, so that its runs can be claimed at once (a
    /// restarted server resuming its own runs); returns how many.
    async fn expire_leases(&self, owner: &str) -> Result<u64, StoreError>;

    /// Deletes up to `limit` runs that finished before `before`, with their steps, logs,
    /// approvals, idempotency keys and hook events; returns how many runs. A child run
    /// whose parent has not finished is kept (the parent may still read it).
    async fn delete_finished_runs(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError>;

    /// Deletes up to `limit` hook events up to outbox position `acked` (what every target
    /// has acknowledged) that happened before `before`; returns how many.
    async fn prune_events(
        &self,
        acked: u64,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError>;

    /// Takes or renews the delivery lease of hook target `target` for `holder` for `ttl`;
    /// true when `holder` holds it now (it was free, expired, or already its own).
    async fn hold_hook_lease(
        &self,
        target: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Gives up `holder`'s lease on `target` (another replica may take it at once).
    async fn release_hook_lease(&self, target: &str, holder: &str) -> Result<(), StoreError>;

    /// What the store has written since it opened, for metrics; `None` when it does not
    /// count.
    fn write_stats(&self) -> Option<WriteStats> {
        None
    }
}

/// The outcome of a store's last write: `None` after a commit, the reason after a failure.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failure: Mutex<Option<String>>,
}

impl WriteHealth {
    /// A write was committed.
    pub fn committed(&self) {
        if let Ok(mut f) = self.failure.lock()
            && f.is_some()
        {
            tracing::info!("the store takes writes again");
            *f = None;
        }
    }

    /// A write failed for `reason` (the store refused it, not a guard).
    pub fn failed(&self, reason: String) {
        if let Ok(mut f) = self.failure.lock() {
            if f.is_none() {
                tracing::warn!(%reason, "the store refused a write");
            }
            *f = Some(reason);
        }
    }

    /// Why the last write failed, when it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }
}

/// How long readiness waits for a probe write.
pub const PROBE_PATIENCE: Duration = Duration::from_secs(2);

/// Readiness of writes given the last write's `health` and a `probe` write to try when the
/// last one failed.
pub async fn check_writes<F>(health: &WriteHealth, probe: F) -> Result<(), StoreError>
where
    F: std::future::Future<Output = Result<(), StoreError>>,
{
    let Some(reason) = health.failure() else {
        return Ok(());
    };
    let why = match tokio::time::timeout(PROBE_PATIENCE, probe).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => crate::problems::chain(&e),
        Err(_) => format!(
            "a probe write did not finish within {} s; the last write failed: {reason}",
            PROBE_PATIENCE.as_secs()
        ),
    };
    let why = why.trim_start_matches("store unavailable: ");
    Err(StoreError::unavailable(format!(
        "it refuses writes ({why})"
    )))
}

/// A stable 64-bit key for `text` (FNV-1a): the same in every build, so that every
/// version of the server derives the same lock key from the same `server.id`.
pub fn stable_key(text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_keys_are_fixed_and_tell_ids_apart() {
        assert_eq!(stable_key(""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_ne!(stable_key("node-a"), stable_key("node-b"));
        assert_eq!(stable_key("node-a"), stable_key("node-a"));
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_until_a_probe_succeeds() {
        let health = WriteHealth::default();
        let refusing = || std::future::ready(Err(StoreError::unavailable("disk full")));
        assert!(
            check_writes(&health, refusing()).await.is_ok(),
            "no probe while healthy"
        );
        health.failed("database or disk is full".into());
        let err = check_writes(&health, refusing()).await.unwrap_err();
        assert!(err.to_string().contains("refuses writes"), "{err}");
        assert!(
            check_writes(&health, std::future::ready(Ok(())))
                .await
                .is_ok()
        );
        health.committed();
        assert_eq!(health.failure(), None);
    }
}
