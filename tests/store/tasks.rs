//! Task queues: tasks written by their run's commit, claimed once each with their own
//! token, leases kept by heartbeats and ended once (by the worker or by expiry), retries,
//! cancel, and the listings of queues and workers.

use std::collections::BTreeSet;
use std::time::Duration;

use orchestrator::model::{Timestamp, now};
use orchestrator::store::tasks::{
    ClaimedTask, NewTask, TaskClaim, TaskEnd, TaskKey, TaskOp, TaskStatus,
};
use orchestrator::store::{DynStore, Guard, StoreError, Transition};
use serde_json::json;

use crate::fixtures::{stored_run, stored_workflow};

fn digest(n: u64) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&n.to_be_bytes());
    d[8] = 0xa5;
    d
}

fn task(run_id: &str, queue: &str, heartbeat_ms: u64, timeout_ms: Option<u64>) -> NewTask {
    NewTask {
        id: orchestrator::ids::new("task_"),
        queue: queue.to_owned(),
        run_id: run_id.to_owned(),
        workflow_id: "wf".into(),
        step: "work".into(),
        attempt: 1,
        payload: json!({"n": 1, "text": "héllo"}),
        heartbeat_ms,
        timeout_ms,
        available_at: now(),
    }
}

/// Commits `ops` with a transition of `run_id` (unguarded).
async fn commit_ops(store: &DynStore, run_id: &str, ops: Vec<TaskOp>) {
    let mut tx = Transition::new(run_id, Guard::default());
    tx.tasks = ops;
    store.commit(tx).await.unwrap();
}

/// A run with `n` tasks on `queue`; their ids, oldest first.
async fn enqueued(
    store: &DynStore,
    queue: &str,
    n: usize,
    heartbeat_ms: u64,
) -> (String, Vec<String>) {
    let wf = stored_workflow(store).await;
    let run = stored_run(store, &wf).await;
    let mut ids = Vec::new();
    for _ in 0..n {
        let t = task(&run, queue, heartbeat_ms, None);
        ids.push(t.id.clone());
        commit_ops(store, &run, vec![TaskOp::Enqueue(t)]).await;
    }
    (run, ids)
}

async fn claim(
    store: &DynStore,
    queues: &[&str],
    worker: &str,
    max: u64,
    seed: u64,
) -> Vec<ClaimedTask> {
    store
        .claim_tasks(TaskClaim {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            worker: worker.to_owned(),
            now: now(),
            tokens: (0..max).map(|i| digest(seed * 1000 + i)).collect(),
        })
        .await
        .unwrap()
}

fn key(t: &ClaimedTask) -> TaskKey {
    TaskKey {
        id: t.id.clone(),
        token: t.token,
        now: now(),
    }
}

fn ms_between(a: Timestamp, b: Timestamp) -> i64 {
    (b - a).num_milliseconds()
}

pub async fn tasks_are_claimed_once_oldest_first_each_with_its_token(store: DynStore) {
    let (run, ids) = enqueued(&store, "q-claim", 5, 30_000).await;
    let first = claim(&store, &["q-claim", "elsewhere"], "w1", 2, 1).await;
    assert_eq!(
        first.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    let t = &first[0];
    assert_eq!(
        (t.run_id.as_str(), t.step.as_str(), t.attempt),
        (run.as_str(), "work", 1)
    );
    assert_eq!(t.payload, json!({"n": 1, "text": "héllo"}));
    assert_ne!(
        first[0].token, first[1].token,
        "every claim has its own token"
    );
    let lease = ms_between(now(), t.lease_expires_at);
    assert!((29_000..=30_000).contains(&lease), "lease {lease} ms");
    // Two claimers at once never take the same task.
    let (b, c) = tokio::join!(
        claim(&store, &["q-claim"], "w2", 10, 2),
        claim(&store, &["q-claim"], "w3", 10, 3)
    );
    let all: BTreeSet<&String> = b.iter().chain(c.iter()).map(|t| &t.id).collect();
    assert_eq!(all.len(), b.len() + c.len());
    assert_eq!(all, ids[2..].iter().collect());
    assert!(claim(&store, &["q-claim"], "w4", 10, 4).await.is_empty());
    assert!(claim(&store, &["other"], "w4", 10, 5).await.is_empty());
    let stored = store.get_task(&ids[0]).await.unwrap();
    assert_eq!(stored.status, TaskStatus::Claimed);
    assert_eq!(stored.worker.as_deref(), Some("w1"));
}

pub async fn concurrent_claimers_take_every_task_exactly_once(store: DynStore) {
    let (run, _) = enqueued(&store, "q-many", 0, 30_000).await;
    let ops: Vec<TaskOp> = (0..300)
        .map(|_| TaskOp::Enqueue(task(&run, "q-many", 30_000, None)))
        .collect();
    commit_ops(&store, &run, ops).await;
    let claimers = (0..4u64).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            for round in 0.. {
                let batch = claim(
                    &store,
                    &["q-many"],
                    &format!("w{w}"),
                    7,
                    w * 100_000 + round,
                )
                .await;
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|t| t.id));
            }
            got
        })
    });
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 300);
    assert_eq!(unique.len(), 300, "a task was claimed twice");
}

pub async fn only_the_live_claim_heartbeats_and_ends_it(store: DynStore) {
    let (_, ids) = enqueued(&store, "q-live", 1, 30_000).await;
    let t = claim(&store, &["q-live"], "w1", 1, 1).await.remove(0);
    let mut forged = key(&t);
    forged.token = digest(999_999);
    assert!(matches!(
        store.heartbeat_task(forged.clone(), None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .end_task(forged, TaskEnd::Completed { output: json!(1) })
            .await,
        Err(StoreError::Conflict(_))
    ));
    let beat = store
        .heartbeat_task(key(&t), Some(json!({"done": 0.5})))
        .await
        .unwrap();
    assert!(!beat.cancel);
    assert!(beat.lease_expires_at.unwrap() >= t.lease_expires_at);
    assert_eq!(
        store.get_task(&ids[0]).await.unwrap().progress,
        Some(json!({"done": 0.5}))
    );
    let ended = store
        .end_task(
            key(&t),
            TaskEnd::Completed {
                output: json!({"ok": true}),
            },
        )
        .await
        .unwrap();
    assert_eq!(ended.status, TaskStatus::Completed);
    assert_eq!(ended.output, Some(json!({"ok": true})));
    assert!(!ended.settled);
    // The claim is over: a repeat of any call changes nothing.
    let again = store
        .end_task(
            key(&t),
            TaskEnd::Failed {
                error: "late".into(),
                retryable: true,
            },
        )
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(matches!(
        store.heartbeat_task(key(&t), None).await,
        Err(StoreError::Conflict(_))
    ));
    let stored = store.get_task(&ids[0]).await.unwrap();
    assert_eq!(
        (stored.status, stored.output),
        (TaskStatus::Completed, Some(json!({"ok": true})))
    );
    let unknown = TaskKey {
        id: "task_nope".into(),
        ..key(&t)
    };
    assert!(matches!(
        store.heartbeat_task(unknown, None).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn expired_claims_end_once_and_go_back_with_the_next_attempt(store: DynStore) {
    let (run, ids) = enqueued(&store, "q-expire", 1, 150).await;
    let first = claim(&store, &["q-expire"], "w1", 1, 1).await.remove(0);
    assert!(
        store.expire_tasks(now(), 10).await.unwrap().is_empty(),
        "not yet"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Expired but not yet swept: the old claim cannot end it any more.
    let late = store
        .end_task(key(&first), TaskEnd::Completed { output: json!(1) })
        .await;
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    let (a, b) = tokio::join!(store.expire_tasks(now(), 10), store.expire_tasks(now(), 10));
    let expired: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(expired.len(), 1, "one sweeper wins");
    let e = &expired[0];
    assert_eq!(
        (e.status, e.settled, e.attempt),
        (TaskStatus::Expired, false, 1)
    );
    assert!(
        e.error.as_deref().unwrap().contains("heartbeat_ms 150"),
        "{:?}",
        e.error
    );
    let unsettled = store
        .unsettled_tasks(now() + chrono::Duration::seconds(1), 10)
        .await
        .unwrap();
    assert_eq!(
        unsettled.iter().map(|t| &t.id).collect::<Vec<_>>(),
        vec![&ids[0]]
    );
    commit_ops(
        &store,
        &run,
        vec![TaskOp::Retry {
            id: ids[0].clone(),
            queue: "q-expire".into(),
            attempt: 2,
            available_at: now(),
        }],
    )
    .await;
    assert!(
        store
            .unsettled_tasks(now() + chrono::Duration::seconds(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let second = claim(&store, &["q-expire"], "w2", 1, 2).await.remove(0);
    assert_eq!((second.id.as_str(), second.attempt), (ids[0].as_str(), 2));
    assert_ne!(second.token, first.token);
    assert!(matches!(
        store.heartbeat_task(key(&first), None).await,
        Err(StoreError::Conflict(_))
    ));
    store.heartbeat_task(key(&second), None).await.unwrap();
}

pub async fn the_attempt_timeout_caps_the_lease(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let run = stored_run(&store, &wf).await;
    let t = task(&run, "q-timeout", 10_000, Some(300));
    commit_ops(&store, &run, vec![TaskOp::Enqueue(t)]).await;
    let claimed = claim(&store, &["q-timeout"], "w1", 1, 1).await.remove(0);
    let lease = ms_between(now(), claimed.lease_expires_at);
    assert!(lease <= 300, "lease {lease} ms");
    let beat = store.heartbeat_task(key(&claimed), None).await.unwrap();
    assert_eq!(
        beat.lease_expires_at,
        Some(claimed.lease_expires_at),
        "never past timeout_ms"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let expired = store.expire_tasks(now(), 10).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert!(
        expired[0]
            .error
            .as_deref()
            .unwrap()
            .contains("timeout_ms 300"),
        "{:?}",
        expired[0].error
    );
}

pub async fn canceled_tasks_leave_the_queue_and_tell_their_claim(store: DynStore) {
    let (run, ids) = enqueued(&store, "q-cancel", 2, 30_000).await;
    let claimed = claim(&store, &["q-cancel"], "w1", 1, 1).await.remove(0);
    assert_eq!(claimed.id, ids[0]);
    commit_ops(
        &store,
        &run,
        ids.iter()
            .map(|id| TaskOp::Cancel {
                id: id.clone(),
                queue: "q-cancel".into(),
            })
            .collect(),
    )
    .await;
    assert!(claim(&store, &["q-cancel"], "w2", 5, 2).await.is_empty());
    let beat = store.heartbeat_task(key(&claimed), None).await.unwrap();
    assert!(beat.cancel);
    let end = store
        .end_task(key(&claimed), TaskEnd::Completed { output: json!(1) })
        .await;
    assert!(matches!(end, Err(StoreError::Conflict(_))), "{end:?}");
    for id in &ids {
        assert_eq!(
            store.get_task(id).await.unwrap().status,
            TaskStatus::Canceled
        );
    }
}

pub async fn retries_become_claimable_at_their_time(store: DynStore) {
    let (run, ids) = enqueued(&store, "q-retry", 1, 30_000).await;
    let t = claim(&store, &["q-retry"], "w1", 1, 1).await.remove(0);
    store
        .end_task(
            key(&t),
            TaskEnd::Failed {
                error: "boom".into(),
                retryable: true,
            },
        )
        .await
        .unwrap();
    let at = now() + chrono::Duration::milliseconds(400);
    commit_ops(
        &store,
        &run,
        vec![TaskOp::Retry {
            id: ids[0].clone(),
            queue: "q-retry".into(),
            attempt: 2,
            available_at: at,
        }],
    )
    .await;
    assert!(
        claim(&store, &["q-retry"], "w1", 1, 2).await.is_empty(),
        "not before its time"
    );
    let times = store.task_times(&["q-retry".to_owned()]).await.unwrap();
    assert_eq!(times.next_available, Some(at));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let again = claim(&store, &["q-retry"], "w1", 1, 3).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
}

pub async fn task_changes_commit_only_with_their_runs_guard(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let run = stored_run(&store, &wf).await;
    let t = task(&run, "q-guard", 30_000, None);
    let mut tx = Transition::new(
        run.as_str(),
        Guard {
            rev: Some(42),
            ..Guard::default()
        },
    );
    tx.tasks = vec![TaskOp::Enqueue(t.clone())];
    assert!(matches!(
        store.commit(tx).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.get_task(&t.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(claim(&store, &["q-guard"], "w1", 1, 1).await.is_empty());
}

pub async fn queues_and_workers_are_listed_with_what_they_hold(store: DynStore) {
    let since = now() - chrono::Duration::minutes(5);
    store
        .record_worker("w1", &["q-list".into(), "q-idle".into()], now())
        .await
        .unwrap();
    store
        .record_worker("w2", &["q-list".into()], now())
        .await
        .unwrap();
    enqueued(&store, "q-list", 3, 30_000).await;
    claim(&store, &["q-list"], "w1", 1, 1).await;
    let queues = store.list_queues(since).await.unwrap();
    let q = queues.iter().find(|q| q.queue == "q-list").unwrap();
    assert_eq!((q.waiting, q.in_flight), (2, 1));
    assert!(q.oldest_waiting_at.is_some());
    assert_eq!(q.workers, vec!["w1".to_owned(), "w2".to_owned()]);
    let idle = queues.iter().find(|q| q.queue == "q-idle").unwrap();
    assert_eq!(
        (idle.waiting, idle.in_flight, idle.workers.len()),
        (0, 0, 1)
    );
    let workers = store.list_workers(since).await.unwrap();
    let names: Vec<(&str, u64)> = workers
        .iter()
        .map(|w| (w.name.as_str(), w.in_flight))
        .collect();
    assert_eq!(names, vec![("w1", 1), ("w2", 0)]);
    assert_eq!(
        workers[0].queues,
        vec!["q-list".to_owned(), "q-idle".to_owned()]
    );
    // Workers not seen lately are left out, then forgotten.
    assert!(
        store
            .list_workers(now() + chrono::Duration::seconds(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .prune_workers(now() + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        2
    );
    // A queue that was used stays listed once it is empty.
    let listed = store
        .list_queues(now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert!(listed.iter().any(|q| q.queue == "q-list"));
    assert!(!listed.iter().any(|q| q.queue == "q-idle"));
}

pub async fn ended_claims_stay_unsettled_until_applied(store: DynStore) {
    let (run, ids) = enqueued(&store, "q-settle", 2, 30_000).await;
    let claimed = claim(&store, &["q-settle"], "w1", 2, 1).await;
    for t in &claimed {
        store
            .end_task(
                key(t),
                TaskEnd::Completed {
                    output: json!({"id": t.id}),
                },
            )
            .await
            .unwrap();
    }
    let later = now() + chrono::Duration::seconds(1);
    assert_eq!(store.unsettled_tasks(later, 10).await.unwrap().len(), 2);
    assert!(
        store
            .unsettled_tasks(now() - chrono::Duration::seconds(5), 10)
            .await
            .unwrap()
            .is_empty()
    );
    commit_ops(&store, &run, vec![TaskOp::Settle { id: ids[0].clone() }]).await;
    store.settle_task(&ids[1], 2).await.unwrap();
    assert_eq!(
        store.unsettled_tasks(later, 10).await.unwrap().len(),
        1,
        "another attempt's settle changes nothing"
    );
    store.settle_task(&ids[1], 1).await.unwrap();
    assert!(store.unsettled_tasks(later, 10).await.unwrap().is_empty());
    let t = store.get_task(&ids[0]).await.unwrap();
    assert_eq!(
        (t.status, t.settled, t.output),
        (TaskStatus::Completed, true, None)
    );
}
