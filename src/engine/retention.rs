//! Retention of finished runs (`retention.runs`): every `retention.interval`, runs that
//! finished longer ago than that are deleted with their steps, logs, approvals,
//! idempotency keys and hook events.
//!
//! Deletes go in batches of [`BATCH`] runs, one store write each, with a pause between
//! batches: on the embedded store every write shares one writer, so a batch must stay
//! short enough that the commits of live runs queued behind it are not held up (its
//! time is in `orchestrator_store_operation_duration_seconds{operation="delete_finished_runs"}`).

use std::sync::Arc;
use std::time::Duration;

use super::shared::Shared;
use crate::model::now;

/// Runs deleted per store write.
pub const BATCH: usize = 100;
/// Between two full batches: room for the engine's own writes.
const PAUSE: Duration = Duration::from_millis(50);

/// The retention loop; returns at once when runs are kept forever.
pub async fn run(shared: Arc<Shared>) {
    let Some(keep) = shared.settings.run_retention else {
        return;
    };
    let Ok(keep) = chrono::Duration::from_std(keep) else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.settings.retention_interval) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let before = now() - keep;
        let mut deleted = 0;
        loop {
            match shared.store.delete_finished_runs(before, BATCH).await {
                Ok(n) => {
                    deleted += n;
                    shared.metrics.retention_deleted("runs", n);
                    if (n as usize) < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::problems::chain(&e), "deleting old runs failed");
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PAUSE) => {}
                _ = shared.shutdown.cancelled() => return,
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "retention deleted finished runs");
        }
    }
}
