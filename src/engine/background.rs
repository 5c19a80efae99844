//! The engine's background loops. Each stops when the engine shuts down.
//!
//! - claim: takes queued runs and runs whose owner's lease expired, as capacity allows;
//!   its first pass at start-up resumes every run a previous process left `RUNNING`.
//! - heartbeat: renews the leases of the runs this server executes, until they have
//!   drained on shutdown, confirming their lease fences (a run the renewal missed is told
//!   to check whether it is still ours).
//! - approvals: applies `on_timeout` to approvals nobody decided in time.
//! - purge: forgets expired idempotency keys.
//! - retention: deletes finished runs past `retention.runs` (see [`super::retention`]).
//! - notices (stores shared by several servers): wakes the claim loop for runs that became
//!   claimable, tells a run's task when another server changed its run, and publishes log
//!   entries committed elsewhere to this server's subscribers; until runs have drained.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::EngineError;
use super::decide::Intervention;
use super::runner::RunMessage;
use super::shared::Shared;
use crate::model::now;
use crate::store::Notice;

pub fn spawn_all(shared: Arc<Shared>) {
    let tasks = shared.tasks.clone();
    let runtime = shared.runtime.clone();
    tasks.spawn_on(claim(shared.clone()), &runtime);
    tasks.spawn_on(heartbeat(shared.clone()), &runtime);
    tasks.spawn_on(approvals(shared.clone()), &runtime);
    if let Some(notices) = shared.store.notices() {
        tasks.spawn_on(watch(shared.clone(), notices), &runtime);
    }
    tasks.spawn_on(super::retention::run(shared.clone()), &runtime);
    tasks.spawn_on(super::tasks::sweep::run(shared.clone()), &runtime);
    tasks.spawn_on(purge(shared), &runtime);
}

async fn claim(shared: Arc<Shared>) {
    loop {
        let free = shared.permits.available_permits();
        if free > 0 {
            // Cleared before the query: a run queued while it runs sets it again.
            shared.queued.store(false, Ordering::SeqCst);
            let sent = tokio::time::Instant::now();
            match shared
                .store
                .claim_runs(&shared.owner, shared.settings.lease_ttl, free)
                .await
            {
                Ok(ids) => {
                    if ids.len() >= free {
                        // There may be more than there was room for.
                        shared.queued.store(true, Ordering::SeqCst);
                    }
                    for id in ids {
                        // The claim took the lease: the run is ours from `sent` on.
                        shared.fences.of(&id).prove(sent);
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
                Err(e) => {
                    shared.queued.store(true, Ordering::SeqCst);
                    tracing::warn!(error = %e, "claiming runs failed")
                }
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
        let sent = tokio::time::Instant::now();
        match shared
            .store
            .renew_leases(&shared.owner, shared.settings.lease_ttl)
            .await
        {
            Ok(renewed) => {
                // Runs whose lease is no longer confirmed check whether they are still
                // ours (another replica may have taken them while we missed renewals).
                for run_id in shared.fences.renewed(&renewed, sent) {
                    if let Some(task) = shared.task_of(&run_id) {
                        let _ = task.send(RunMessage::Revalidate);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewing leases failed"),
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
            match shared.decide(&run_id, Intervention::Tick).await {
                Ok(run) => tracing::debug!(run_id, status = %run.status, "woken by its timer"),
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

async fn watch(shared: Arc<Shared>, mut notices: tokio::sync::broadcast::Receiver<Notice>) {
    loop {
        // Until the runs have drained: draining runs still hear of cancels elsewhere, and
        // their log streams of entries committed elsewhere.
        let notice = tokio::select! {
            n = notices.recv() => n,
            _ = shared.closed.cancelled() => return,
        };
        match notice {
            Ok(Notice::Run {
                run_id,
                rev,
                logs,
                claimable,
            }) => {
                if claimable {
                    shared.queue_wake();
                }
                if let Some(rev) = rev {
                    shared.committed_rev(&run_id, rev);
                    if let Some(task) = shared.task_of(&run_id) {
                        let _ = task.send(RunMessage::Refresh { rev });
                    }
                }
                if let Some((first, last)) = logs {
                    relay_logs(&shared, &run_id, first, last).await;
                }
            }
            // Some notices were lost: claim whatever needs an owner now. Log subscribers
            // catch up from the store when they see a gap in `seq`.
            Ok(Notice::Queue { queue }) => shared.queues.signals.wake(&queue),
            Ok(Notice::Resync) | Err(RecvError::Lagged(_)) => {
                shared.queues.signals.wake_all();
                shared.queue_wake();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Publishes log entries `first..=last` of a run, committed by another server, to this
/// server's subscribers of that run (if any).
async fn relay_logs(shared: &Shared, run_id: &str, first: u64, last: u64) {
    if first == 0 || last < first || !shared.hub.is_watched(run_id) {
        return;
    }
    let count = (last - first + 1) as usize;
    match shared.store.read_logs(run_id, first - 1, count).await {
        Ok(entries) => shared.hub.publish(run_id, &entries),
        Err(e) => {
            tracing::warn!(run_id, error = %e, "reading log entries committed elsewhere failed")
        }
    }
}
