//! Leases: claims, expiry takeover, renewal (by heartbeat and by the owner's commits), and
//! approval deadlines of parked runs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use orchestrator::model::{RunStatus, now};
use orchestrator::store::{DynStore, Guard, OwnerChange, RunHead, Transition};

use crate::fixtures::{lease, logs_only, new_run, stored_run, stored_workflow};

const LONG: Duration = Duration::from_secs(60);

pub async fn claims_take_unowned_runs_once(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let mut queued = Vec::new();
    for _ in 0..6 {
        queued.push(stored_run(&store, &wf).await);
    }
    let mut owned = new_run(&wf);
    owned.owner = Some(lease("node_x", LONG));
    store.create_run(owned).await.unwrap();
    let first = store.claim_runs("node_a", LONG, 4).await.unwrap();
    assert_eq!(first, queued[..4].to_vec(), "oldest first");
    // Two claimers at once never take the same run.
    let (b, c) = tokio::join!(
        store.claim_runs("node_b", LONG, 10),
        store.claim_runs("node_c", LONG, 10)
    );
    let (b, c) = (b.unwrap(), c.unwrap());
    let all: BTreeSet<&String> = b.iter().chain(c.iter()).collect();
    assert_eq!(all.len(), b.len() + c.len());
    assert_eq!(all, queued[4..].iter().collect());
    assert!(
        store
            .claim_runs("node_d", LONG, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A claim bumps the revision, so a decision read before it is stale.
    assert_eq!(store.get_run(&queued[0]).await.unwrap().control.rev, 1);
    // The new owner's guard holds.
    let tx = Transition::new(
        queued[0].as_str(),
        Guard {
            owner: Some("node_a".into()),
            ..Guard::default()
        },
    );
    let mut tx = tx;
    tx.logs = crate::fixtures::logs_only(&queued[0], 1).logs;
    store.commit(tx).await.unwrap();
}

pub async fn expired_leases_are_taken_over_and_renewed_ones_are_not(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let short = Duration::from_millis(300);
    let a = stored_run(&store, &wf).await;
    let b = stored_run(&store, &wf).await;
    assert_eq!(
        store.claim_runs("node_a", short, 1).await.unwrap(),
        vec![a.clone()]
    );
    assert_eq!(
        store.claim_runs("node_b", short, 1).await.unwrap(),
        vec![b.clone()]
    );
    // node_b keeps renewing; node_a has died.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        store.renew_leases("node_b", short).await.unwrap();
    }
    let taken = store.claim_runs("node_c", LONG, 10).await.unwrap();
    assert_eq!(taken, vec![a.clone()]);
    // Runs that are parked or finished are never claimed, whatever their lease.
    let mut run = store.get_run(&b).await.unwrap();
    run.status = RunStatus::Succeeded;
    let mut tx = Transition::new(&b, Guard::default());
    tx.head = Some(RunHead::of(&run));
    store.commit(tx).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store
            .claim_runs("node_c", LONG, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn commits_that_renew_keep_a_busy_run_owned(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let short = Duration::from_millis(300);
    let busy = stored_run(&store, &wf).await;
    let idle = stored_run(&store, &wf).await;
    assert_eq!(
        store.claim_runs("node_a", short, 2).await.unwrap(),
        vec![busy.clone(), idle.clone()]
    );
    // node_a commits steps of one run and no heartbeat renews anything.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut tx = logs_only(&busy, 1);
        tx.owner = OwnerChange::Renew(short);
        store.commit(tx).await.unwrap();
    }
    assert_eq!(
        store.claim_runs("node_c", LONG, 10).await.unwrap(),
        vec![idle]
    );
}

/// PostgreSQL only: a heartbeat renewal does not wait for a run whose row another
/// transaction holds (as a group commit in flight does); it renews the others. It used to
/// wait, inside a group commit of its own, and deadlock against commits under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_leases_does_not_wait_for_a_run_another_transaction_holds() {
    let dsn = crate::pg::fresh_database().await;
    let store: DynStore = Arc::new(crate::open_postgres(&dsn).await);
    let wf = stored_workflow(&store).await;
    let short = Duration::from_millis(500);
    let held = stored_run(&store, &wf).await;
    let free = stored_run(&store, &wf).await;
    assert_eq!(
        store.claim_runs("node_a", short, 2).await.unwrap(),
        vec![held.clone(), free.clone()]
    );
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", &[&held])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), store.renew_leases("node_a", LONG))
        .await
        .expect("the renewal waited for the held run")
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    // Past the claim's short lease: the held run was not renewed, the free one was.
    tokio::time::sleep(short + Duration::from_millis(200)).await;
    assert_eq!(
        store.claim_runs("node_c", LONG, 10).await.unwrap(),
        vec![held]
    );
}

pub async fn parked_runs_with_passed_deadlines_are_due(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let park = |id: String, deadline: chrono::Duration| {
        let store = store.clone();
        async move {
            let mut run = store.get_run(&id).await.unwrap();
            run.status = RunStatus::WaitingApproval;
            run.control.wake_at = Some(now() + deadline);
            let mut tx = Transition::new(&id, Guard::default());
            tx.head = Some(RunHead::of(&run));
            store.commit(tx).await.unwrap();
            id
        }
    };
    let late = park(
        stored_run(&store, &wf).await,
        chrono::Duration::seconds(-10),
    )
    .await;
    let later = park(stored_run(&store, &wf).await, chrono::Duration::seconds(-5)).await;
    park(stored_run(&store, &wf).await, chrono::Duration::hours(1)).await;
    stored_run(&store, &wf).await;
    assert_eq!(
        store.due_approvals(now(), 10).await.unwrap(),
        vec![late.clone(), later]
    );
    assert_eq!(store.due_approvals(now(), 1).await.unwrap(), vec![late]);
}
