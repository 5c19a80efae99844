//! The engine's background loops. Each stops when the engine shuts down.
//!
//! - claim: takes queued runs and runs whose owner's lease expired, as capacity allows;
//!   its first pass at start-up resumes every run a previous process left `RUNNING`.
//! - heartbeat: renews the leases of the runs this server executes, until they have
//!   drained on shutdown.
//! - approvals: applies `on_timeout` to approvals nobody decided in time.
//! - purge: forgets expired idempotency keys.

use std::sync::Arc;
use std::time::Duration;

use super::decide::Request;
use super::{EngineError, Shared};
use crate::model::now;

pub fn spawn_all(shared: Arc<Shared>) {
    let tasks = shared.tasks.clone();
    let runtime = shared.runtime.clone();
    tasks.spawn_on(claim(shared.clone()), &runtime);
    tasks.spawn_on(heartbeat(shared.clone()), &runtime);
    tasks.spawn_on(approvals(shared.clone()), &runtime);
    tasks.spawn_on(purge(shared), &runtime);
}

async fn claim(shared: Arc<Shared>) {
    loop {
        let free = shared.permits.available_permits();
        if free > 0 {
            match shared
                .store
                .claim_runs(&shared.owner, shared.settings.lease_ttl, free)
                .await
            {
                Ok(ids) => {
                    for id in ids {
                        // Capacity may have gone elsewhere since counting; the claimed run
                        // waits for it (its lease is renewed meanwhile, as it is ours), or
                        // is released again when the server stops first.
                        let permits = shared.permits.clone();
                        let shared = shared.clone();
                        let runtime = shared.runtime.clone();
                        shared.runs.clone().spawn_on(
                            async move {
                                tokio::select! {
                                    permit = permits.acquire_owned() => {
                                        if let Ok(permit) = permit {
                                            shared.spawn_task(id, None, permit);
                                        }
                                    }
                                    _ = shared.shutdown.cancelled() => shared.release(&id).await,
                                }
                            },
                            &runtime,
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming runs failed"),
            }
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.settings.poll_interval) => {}
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

async fn heartbeat(shared: Arc<Shared>) {
    let every = shared.settings.lease_ttl / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shared.closed.cancelled() => return,
        }
        if let Err(e) = shared
            .store
            .renew_leases(&shared.owner, shared.settings.lease_ttl)
            .await
        {
            tracing::warn!(error = %e, "renewing leases failed");
        }
    }
}

async fn approvals(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.settings.poll_interval) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let due = match shared.store.due_approvals(now(), 100).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading due approvals failed");
                continue;
            }
        };
        for run_id in due {
            match shared.decide(&run_id, Request::Timeout).await {
                Ok(run) => tracing::info!(run_id, status = %run.status, "approval timed out"),
                Err(EngineError::Conflict(_)) => {}
                Err(e) => tracing::warn!(run_id, error = %e, "applying an approval timeout failed"),
            }
        }
    }
}

async fn purge(shared: Arc<Shared>) {
    let every = Duration::from_secs(600);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        if let Err(e) = shared.store.purge_expired(now()).await {
            tracing::warn!(error = %e, "purging idempotency keys failed");
        }
    }
}
