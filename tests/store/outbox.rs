//! PostgreSQL's outbox without a writer lock: readers stop below any event id that a
//! transaction still open may commit, and only such transactions hold them back.

use orchestrator::store::postgres::OUTBOX_LOCK;
use orchestrator::store::{DynStore, EventFilter, Guard, Transition};
use std::sync::Arc;

use crate::fixtures::{event, stored_run, stored_workflow};

/// Another session on the test database, driven by hand.
async fn session(dsn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Opens a transaction that holds the outbox lock as every writer does and takes an
/// event id for `run_id`; returns the id.
async fn open_writer(client: &tokio_postgres::Client, run_id: &str, wf: &str) -> u64 {
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock_shared({OUTBOX_LOCK})"
        ))
        .await
        .unwrap();
    let body = serde_json::to_string(&event("step.succeeded")).unwrap();
    let row = client
        .query_one(
            "INSERT INTO events (run_id, workflow_id, seq, body, created_at) \
             VALUES ($1, $2, 1000, $3, 0) RETURNING id",
            &[&run_id, &wf, &body],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) as u64
}

async fn committed_events(store: &DynStore, run_id: &str) {
    let mut tx = Transition::new(run_id, Guard::default());
    tx.events = vec![event("step.started"), event("step.succeeded")];
    store.commit(tx).await.unwrap();
}

async fn ids(store: &DynStore) -> Vec<u64> {
    let read: Vec<u64> = store
        .read_events(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let listed: Vec<u64> = store
        .list_events(&EventFilter::default(), 0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        read, listed,
        "the feed and hook delivery read the same outbox"
    );
    read
}

/// A fresh PostgreSQL store with one workflow and one run, and the outbox ids it holds.
struct Outbox {
    dsn: String,
    store: DynStore,
    wf: String,
    run: String,
    before: Vec<u64>,
}

impl Outbox {
    async fn new() -> Self {
        let dsn = crate::pg::fresh_database().await;
        let store: DynStore = Arc::new(crate::open_postgres(&dsn).await);
        let wf = stored_workflow(&store).await;
        let run = stored_run(&store, &wf).await;
        let before = ids(&store).await;
        Self {
            dsn,
            store,
            wf,
            run,
            before,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_wait_below_an_event_id_whose_transaction_is_still_open() {
    let Outbox {
        dsn,
        store,
        wf,
        run,
        before,
    } = Outbox::new().await;

    let late = session(&dsn).await;
    let held = open_writer(&late, &run, &wf).await;
    committed_events(&store, &run).await;

    // Committed events above the open transaction's id are not read yet: a reader that
    // moved past them would never see `held`.
    for _ in 0..3 {
        assert_eq!(ids(&store).await, before);
        assert!(store.outbox_head().await.unwrap() < held);
    }

    late.batch_execute("COMMIT").await.unwrap();
    let after = ids(&store).await;
    assert_eq!(after.len(), before.len() + 3);
    assert_eq!(
        after[before.len()],
        held,
        "the late commit comes in id order"
    );
    assert!(after.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.outbox_head().await.unwrap(), *after.last().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_event_id_holds_readers_only_until_its_transaction_ends() {
    let Outbox {
        dsn,
        store,
        wf,
        run,
        before,
    } = Outbox::new().await;

    let abandoned = session(&dsn).await;
    let hole = open_writer(&abandoned, &run, &wf).await;
    committed_events(&store, &run).await;
    assert_eq!(ids(&store).await, before);

    abandoned.batch_execute("ROLLBACK").await.unwrap();
    let after = ids(&store).await;
    assert_eq!(after.len(), before.len() + 2);
    assert!(!after.contains(&hole));
    assert!(after[before.len()] > hole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_that_do_not_hold_the_outbox_lock_never_hold_readers_back() {
    let Outbox {
        dsn,
        store,
        run,
        before,
        ..
    } = Outbox::new().await;

    // A long write transaction of something else on the same database.
    let other = session(&dsn).await;
    other
        .batch_execute("BEGIN; CREATE TABLE unrelated (x int); INSERT INTO unrelated VALUES (1)")
        .await
        .unwrap();
    committed_events(&store, &run).await;
    assert_eq!(ids(&store).await.len(), before.len() + 2);
    other.batch_execute("ROLLBACK").await.unwrap();
}

/// A transaction of any writer holds the lock whether or not it adds events: a read that
/// finds one open must wait for it, not answer with an older horizon that leaves out
/// events committed before the read began (a client that saw a run end must find its
/// events in the feed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_waits_for_the_writers_open_when_it_began_and_sees_what_was_committed() {
    let Outbox {
        dsn,
        store,
        run,
        before,
        ..
    } = Outbox::new().await;

    let busy = session(&dsn).await;
    busy.batch_execute(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock_shared({OUTBOX_LOCK})"
    ))
    .await
    .unwrap();
    committed_events(&store, &run).await;
    let ends = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        busy.batch_execute("COMMIT").await.unwrap();
    });
    let read: Vec<u64> = store
        .list_events(&EventFilter::default(), 0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    ends.await.unwrap();
    assert_eq!(read.len(), before.len() + 2, "{read:?}");
}

/// A writer that stays open (a stalled transaction) delays one reader by a bounded wait;
/// later readers answer at once with the horizon below it instead of each waiting in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_delays_readers_once_not_each_in_turn() {
    let Outbox {
        dsn,
        store,
        wf,
        run,
        before,
    } = Outbox::new().await;

    let stalled = session(&dsn).await;
    let held = open_writer(&stalled, &run, &wf).await;
    assert_eq!(
        ids(&store).await,
        before,
        "the first reader waited, then stopped below"
    );
    let started = std::time::Instant::now();
    for _ in 0..8 {
        assert_eq!(ids(&store).await, before);
    }
    // Sixteen reads that each waited would take 32 s.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    stalled.batch_execute("COMMIT").await.unwrap();
    assert_eq!(ids(&store).await.last(), Some(&held));
}
