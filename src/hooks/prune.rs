//! Pruning of the hook outbox (`retention.hook_events`): events that every configured
//! target has acknowledged (at or below the lowest cursor) and that are older than the
//! retention are deleted, in batches of [`BATCH`]. Without hook targets nothing waits for
//! an event, so age alone decides. Readers of the outbox other than hook delivery (the
//! events feed) see events for at least the retention.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::now;
use crate::store::{DynStore, StoreError};

/// Events deleted per store write.
pub const BATCH: usize = 1000;
/// Between two full batches.
const PAUSE: Duration = Duration::from_millis(50);

/// The pruning loop of the outbox.
pub(super) struct Pruner {
    pub store: DynStore,
    /// The configured targets, whose cursors bound what may go.
    pub targets: Vec<&'static str>,
    pub keep: Duration,
    pub every: Duration,
    pub metrics: Arc<Metrics>,
    pub stop: CancellationToken,
}

impl Pruner {
    pub async fn run(self) {
        let Ok(keep) = chrono::Duration::from_std(self.keep) else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = self.stop.cancelled() => return,
            }
            if let Err(e) = self.prune(keep).await {
                tracing::warn!(error = %crate::problems::chain(&e), "pruning hook events failed");
            }
        }
    }

    async fn prune(&self, keep: chrono::Duration) -> Result<(), StoreError> {
        let acked = self.acknowledged().await?;
        let before = now() - keep;
        loop {
            let n = self.store.prune_events(acked, before, BATCH).await?;
            self.metrics.retention_deleted("hook_events", n);
            if (n as usize) < BATCH {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(PAUSE) => {}
                _ = self.stop.cancelled() => return Ok(()),
            }
        }
    }

    /// The outbox position every target has acknowledged.
    async fn acknowledged(&self) -> Result<u64, StoreError> {
        let mut lowest = self.store.outbox_head().await?;
        for target in &self.targets {
            lowest = lowest.min(self.store.event_cursor(target).await?);
        }
        Ok(lowest)
    }
}
