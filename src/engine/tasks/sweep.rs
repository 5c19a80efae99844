//! The task sweeper: ends claims whose lease ran out (an attempt failed with class
//! `timeout`), applies ended claims their run has not taken (a crash between the end and
//! the run's commit, or a run that was busy), and forgets workers long gone.
//!
//! It sleeps until the earliest lease ends (at most `engine.poll_interval`), and is woken
//! when this server hands out a claim, whose lease may end sooner. Replicas sweep the same
//! tasks; each expiry is one guarded update, so only one of them ends a claim.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::super::shared::Shared;
use super::apply;
use crate::model::now;

/// Ended claims younger than this are left to whoever ended them (the API call applies
/// its own end at once).
const SETTLE_GRACE: Duration = Duration::from_secs(5);
/// Claims handled per pass.
const BATCH: usize = 100;
/// Workers not seen for this long are forgotten.
const FORGET_WORKERS: Duration = Duration::from_secs(3600);
/// How often ended claims are looked for.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// How often workers long gone are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub async fn run(shared: Arc<Shared>) {
    let mut last_housekeeping = tokio::time::Instant::now();
    let mut last_prune = tokio::time::Instant::now();
    loop {
        let cap = shared.settings.poll_interval;
        let wait = match shared.store.task_times(&[]).await {
            Ok(times) => times
                .next_expiry
                .map(|at| (at - now()).to_std().unwrap_or_default().min(cap))
                .unwrap_or(cap),
            Err(e) => {
                tracing::warn!(error = %e, "reading task leases failed");
                cap
            }
        };
        let next = now() + chrono::Duration::from_std(wait).unwrap_or_default();
        shared
            .queues
            .next_sweep
            .store(next.timestamp_millis(), Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.queues.claimed.notified() => continue,
            _ = shared.shutdown.cancelled() => return,
        }
        expire(&shared).await;
        if last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = tokio::time::Instant::now();
            settle_stragglers(&shared).await;
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = tokio::time::Instant::now();
            let before = now() - chrono::Duration::from_std(FORGET_WORKERS).unwrap_or_default();
            if let Err(e) = shared.store.prune_workers(before).await {
                tracing::warn!(error = %e, "forgetting old workers failed");
            }
        }
    }
}

async fn expire(shared: &Arc<Shared>) {
    loop {
        let expired = match shared.store.expire_tasks(now(), BATCH).await {
            Ok(expired) => expired,
            Err(e) => {
                tracing::warn!(error = %e, "expiring task leases failed");
                return;
            }
        };
        let more = expired.len() == BATCH;
        for task in expired {
            tracing::info!(task = %task.id, run_id = %task.run_id, error = task.error.as_deref().unwrap_or(""), "task lease expired");
            super::count_end(&shared.metrics, &task);
            apply::apply(shared, task).await;
        }
        if !more {
            return;
        }
    }
}

async fn settle_stragglers(shared: &Arc<Shared>) {
    let before = now() - chrono::Duration::from_std(SETTLE_GRACE).unwrap_or_default();
    match shared.store.unsettled_tasks(before, BATCH).await {
        Ok(tasks) => {
            for task in tasks {
                apply::apply(shared, task).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading unsettled tasks failed"),
    }
}
