//! The store's lifecycle: the quarantine's marks (a run left cleanly, a step's
//! interruptions), renewals that name what they renewed, a restarted owner's leases
//! expired at once, retention of finished runs and acknowledged hook events, hook delivery
//! leases, write health and (PostgreSQL) one live process per server id.

use std::time::Duration;

use orchestrator::model::{Approval, Decision, NewEvent, RunStatus, StepStatus, now};
use orchestrator::store::{
    DynStore, Guard, Lifecycle, NewRun, OwnerChange, RunHead, StoreError, Transition,
};

use crate::fixtures::{claim, event, logs_only, new_run, stored_run, stored_workflow};

const LONG: Duration = Duration::from_secs(60);

pub async fn renewals_name_the_runs_they_renewed(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let a1 = stored_run(&store, &wf).await;
    let a2 = stored_run(&store, &wf).await;
    let b = stored_run(&store, &wf).await;
    store.claim_runs("node_a", LONG, 2).await.unwrap();
    store.claim_runs("node_b", LONG, 1).await.unwrap();
    let mut renewed = store.renew_leases("node_a", LONG).await.unwrap();
    renewed.sort();
    assert_eq!(renewed, vec![a1, a2]);
    assert_eq!(store.renew_leases("node_b", LONG).await.unwrap(), vec![b]);
    assert!(store.renew_leases("node_c", LONG).await.unwrap().is_empty());
}

pub async fn a_graceful_leave_marks_the_run_and_the_next_owner_clears_the_mark(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let id = stored_run(&store, &wf).await;
    store.claim_runs("node_a", LONG, 1).await.unwrap();
    let mut run = store.get_run(&id).await.unwrap();
    assert!(!run.control.left_cleanly);
    run.steps[1].status = StepStatus::Running;
    run.steps[1].interruptions = 1;
    let mut tx = Transition::new(&id, Guard::default());
    tx.steps = vec![(1, run.steps[1].clone())];
    tx.owner = OwnerChange::Leave;
    store.commit(tx).await.unwrap();
    let left = store.get_run(&id).await.unwrap();
    assert!(left.control.left_cleanly);
    assert_eq!(left.steps[1].interruptions, 1, "the count survives");
    assert_eq!(
        store.claim_runs("node_b", LONG, 5).await.unwrap(),
        vec![id.clone()],
        "a run left cleanly is claimable at once"
    );
    assert!(
        store.get_run(&id).await.unwrap().control.left_cleanly,
        "a claim keeps the mark for the new owner to read"
    );
    let mut tx = logs_only(&id, 1);
    tx.owner = OwnerChange::Renew(LONG);
    store.commit(tx).await.unwrap();
    assert!(!store.get_run(&id).await.unwrap().control.left_cleanly);
}

pub async fn an_owners_leases_expire_at_once_for_its_restart(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let mine = stored_run(&store, &wf).await;
    let theirs = stored_run(&store, &wf).await;
    store.claim_runs("node_a", LONG, 1).await.unwrap();
    store.claim_runs("node_b", LONG, 1).await.unwrap();
    assert!(
        store
            .claim_runs("node_a", LONG, 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.expire_leases("node_a").await.unwrap(), 1);
    assert_eq!(
        store.claim_runs("node_a", LONG, 5).await.unwrap(),
        vec![mine]
    );
    assert_eq!(
        store.renew_leases("node_b", LONG).await.unwrap(),
        vec![theirs]
    );
}

/// Ends run `id` with `status`, finished `ago`.
async fn finish(store: &DynStore, id: &str, status: RunStatus, ago: chrono::Duration) {
    let mut run = store.get_run(id).await.unwrap();
    run.status = status;
    run.finished_at = Some(now() - ago);
    let mut tx = Transition::new(id, Guard::default());
    tx.head = Some(RunHead::of(&run));
    tx.events = vec![event("run.succeeded")];
    tx.approvals = vec![Approval {
        step: "step0".into(),
        decision: Decision::Approved,
        by: "ops".into(),
        at: now(),
        comment: None,
        input: None,
    }];
    store.commit(tx).await.unwrap();
}

pub async fn finished_runs_past_the_cutoff_are_deleted_with_all_that_is_theirs(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let hour = chrono::Duration::hours(1);
    let mut keyed = new_run(&wf);
    keyed.idempotency = Some(claim("key-1", "h1", chrono::Duration::hours(24)));
    let old: Vec<String> = {
        let mut ids = vec![store.create_run(keyed).await.unwrap().run.id];
        ids.push(stored_run(&store, &wf).await);
        ids.push(stored_run(&store, &wf).await);
        ids
    };
    for (id, status) in
        old.iter()
            .zip([RunStatus::Succeeded, RunStatus::Failed, RunStatus::Canceled])
    {
        finish(&store, id, status, hour * 48).await;
    }
    let recent = stored_run(&store, &wf).await;
    finish(&store, &recent, RunStatus::Succeeded, hour).await;
    let running = stored_run(&store, &wf).await;
    let cutoff = now() - hour * 24;

    assert_eq!(store.delete_finished_runs(cutoff, 2).await.unwrap(), 2);
    assert_eq!(store.delete_finished_runs(cutoff, 2).await.unwrap(), 1);
    assert_eq!(store.delete_finished_runs(cutoff, 2).await.unwrap(), 0);
    for id in &old {
        assert!(matches!(
            store.get_run(id).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.read_logs(id, 0, 10).await,
            Err(StoreError::NotFound(_))
        ));
    }
    let events = store.read_events(0, 100).await.unwrap();
    assert!(
        events.iter().all(|e| !old.contains(&e.run_id)),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.run_id == recent));
    assert_eq!(store.get_run(&recent).await.unwrap().approvals.len(), 1);
    store.get_run(&running).await.unwrap();
    // The deleted run's idempotency key is free for a new run.
    let mut again: NewRun = new_run(&wf);
    again.idempotency = Some(claim("key-1", "h1", chrono::Duration::hours(24)));
    assert!(store.create_run(again).await.unwrap().created);
}

pub async fn a_finished_child_is_kept_while_its_parent_goes_on(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let parent = stored_run(&store, &wf).await;
    let mut child = new_run(&wf);
    child.parent = Some((parent.clone(), 1));
    let child = store.create_run(child).await.unwrap().run.id;
    let hour = chrono::Duration::hours(1);
    finish(&store, &child, RunStatus::Succeeded, hour * 48).await;
    let cutoff = now() - hour * 24;
    assert_eq!(store.delete_finished_runs(cutoff, 10).await.unwrap(), 0);
    store.get_run(&child).await.unwrap();
    finish(&store, &parent, RunStatus::Succeeded, hour * 47).await;
    assert_eq!(store.delete_finished_runs(cutoff, 10).await.unwrap(), 2);
    for id in [&parent, &child] {
        assert!(matches!(
            store.get_run(id).await,
            Err(StoreError::NotFound(_))
        ));
    }
}

pub async fn only_acknowledged_events_past_the_cutoff_are_pruned(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let id = stored_run(&store, &wf).await;
    let at = |ago: i64| NewEvent {
        ts: now() - chrono::Duration::hours(ago),
        ..event("step.started")
    };
    let mut tx = Transition::new(&id, Guard::default());
    tx.events = vec![at(50), at(49), at(48), at(1)];
    store.commit(tx).await.unwrap();
    let ids: Vec<u64> = store
        .read_events(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let cutoff = now() - chrono::Duration::hours(24);
    // Acknowledged up to the second: the third is old but not acknowledged.
    assert_eq!(store.prune_events(ids[1], cutoff, 1).await.unwrap(), 1);
    assert_eq!(store.prune_events(ids[1], cutoff, 10).await.unwrap(), 1);
    assert_eq!(store.prune_events(ids[1], cutoff, 10).await.unwrap(), 0);
    // Acknowledged to the end: the recent one stays by age.
    assert_eq!(store.prune_events(ids[3], cutoff, 10).await.unwrap(), 1);
    let left: Vec<u64> = store
        .read_events(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, vec![ids[3]]);
}

pub async fn a_hook_lease_has_one_holder_until_it_expires_or_is_released(store: DynStore) {
    let short = Duration::from_millis(300);
    assert!(
        store
            .hold_hook_lease("audit_log", "a", short)
            .await
            .unwrap()
    );
    assert!(
        !store
            .hold_hook_lease("audit_log", "b", short)
            .await
            .unwrap()
    );
    assert!(
        store.hold_hook_lease("memarch", "b", short).await.unwrap(),
        "per target"
    );
    assert!(
        store
            .hold_hook_lease("audit_log", "a", short)
            .await
            .unwrap(),
        "renewed"
    );
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    assert!(
        store.hold_hook_lease("audit_log", "b", LONG).await.unwrap(),
        "expired"
    );
    assert!(!store.hold_hook_lease("audit_log", "a", LONG).await.unwrap());
    store.release_hook_lease("audit_log", "a").await.unwrap();
    assert!(
        !store.hold_hook_lease("audit_log", "a", LONG).await.unwrap(),
        "not a's to release"
    );
    store.release_hook_lease("audit_log", "b").await.unwrap();
    assert!(
        store.hold_hook_lease("audit_log", "a", LONG).await.unwrap(),
        "released"
    );
}

pub async fn a_store_taking_writes_is_writable(store: DynStore) {
    store.writable().await.unwrap();
    store.hold_identity("node_a").await.unwrap();
}

/// PostgreSQL only: one live store holds a server id; the next may take it once the first
/// has let go (a process that dies lets go with its connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_id_is_held_by_one_live_process_at_a_time() {
    let dsn = crate::pg::fresh_database().await;
    let first = crate::open_postgres(&dsn).await;
    let second = crate::open_postgres(&dsn).await;
    first.hold_identity("node-a").await.unwrap();
    let refused = second.hold_identity("node-a").await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Conflict(m) if m.contains("node-a")),
        "{refused:?}"
    );
    second.hold_identity("node-b").await.unwrap();
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), second.hold_identity("node-a"))
        .await
        .expect("taken once the first let go")
        .unwrap();
}
