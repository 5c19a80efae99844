//! Runs and step runs, guarded transitions, run lists and idempotency keys.

use std::collections::BTreeSet;
use std::time::Duration;

use orchestrator::model::{
    Approval, Decision, PageRequest, RunFilter, RunStatus, StepRun, StepStatus, now,
};
use orchestrator::store::{DynStore, Guard, OwnerChange, RunHead, StoreError, Transition};
use serde_json::json;

use crate::fixtures::{claim, context, lease, new_run, stored_run, stored_workflow};

pub async fn created_runs_read_back_with_their_steps(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let new = new_run(&wf);
    let created = store.create_run(new.clone()).await.unwrap();
    assert!(created.created);
    assert_eq!(created.logs.len(), 1);
    assert_eq!(created.logs[0].seq, 1);
    let run = store.get_run(&new.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Pending);
    assert_eq!(run.workflow_id, wf);
    assert_eq!(run.context, new.context);
    assert_eq!(run.steps, new.steps);
    assert!(run.approvals.is_empty());
    assert_eq!(run.control.rev, 0);
    let twice = store.create_run(new).await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
    let missing = store.get_run("run_missing").await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

pub async fn transitions_update_head_context_steps_and_approvals(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let id = stored_run(&store, &wf).await;
    let mut run = store.get_run(&id).await.unwrap();
    run.status = RunStatus::WaitingApproval;
    run.current_step = 1;
    run.started_at = Some(now());
    run.control.active_ms = 42;
    run.control.wake_at = Some(now());
    let mut tx = Transition::new(&id, Guard::default());
    tx.head = Some(RunHead::of(&run));
    tx.context = Some(context(json!({"k": "changed", "extra": [1, 2]})));
    let mut step = run.steps[1].clone();
    step.status = StepStatus::Succeeded;
    step.output = Some(json!({"status": 200, "body": {"ok": true}}));
    step.http_code = Some(200);
    tx.steps = vec![(1, step.clone())];
    tx.approvals = vec![Approval {
        step: "step1".into(),
        decision: Decision::Approved,
        by: "alice".into(),
        at: now(),
        comment: Some("fine".into()),
        input: Some(json!({"x": 1})),
    }];
    let committed = store.commit(tx).await.unwrap();
    assert_eq!(committed.rev, 1);
    let read = store.get_run(&id).await.unwrap();
    assert_eq!(read.status, RunStatus::WaitingApproval);
    assert_eq!(read.current_step, 1);
    assert_eq!(read.control.rev, 1);
    assert_eq!(read.control.active_ms, 42);
    assert_eq!(read.control.wake_at, run.control.wake_at);
    assert_eq!(read.context["k"], "changed");
    assert_eq!(read.steps[1], step);
    assert_eq!(read.steps[0].status, StepStatus::Pending);
    assert_eq!(read.approvals.len(), 1);
    assert_eq!(read.approvals[0].by, "alice");
    let mut second = Transition::new(&id, Guard::default());
    second.approvals = vec![Approval {
        decision: Decision::Rejected,
        by: "bob".into(),
        ..read.approvals[0].clone()
    }];
    assert_eq!(store.commit(second).await.unwrap().rev, 2);
    let read = store.get_run(&id).await.unwrap();
    let by: Vec<&str> = read.approvals.iter().map(|a| a.by.as_str()).collect();
    assert_eq!(by, vec!["alice", "bob"]);
    let missing = store
        .commit(Transition::new("run_missing", Guard::default()))
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

pub async fn guards_refuse_stale_revisions_other_owners_and_wrong_statuses(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let mut new = new_run(&wf);
    new.owner = Some(lease("node_a", Duration::from_secs(30)));
    let id = store.create_run(new).await.unwrap().run.id;
    let guarded = |guard: Guard| {
        let mut tx = Transition::new(&id, guard);
        tx.logs = crate::fixtures::logs_only(&id, 1).logs;
        tx
    };
    let ok = store
        .commit(guarded(Guard {
            rev: Some(0),
            owner: Some("node_a".into()),
            status_in: Some(vec![RunStatus::Pending, RunStatus::Running]),
        }))
        .await
        .unwrap();
    assert_eq!(ok.rev, 1);
    for guard in [
        Guard {
            rev: Some(0),
            ..Guard::default()
        },
        Guard {
            owner: Some("node_b".into()),
            ..Guard::default()
        },
        Guard {
            status_in: Some(vec![RunStatus::WaitingApproval]),
            ..Guard::default()
        },
    ] {
        let refused = store.commit(guarded(guard.clone())).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{guard:?}: {refused:?}"
        );
    }
    // Nothing of a refused transition was written.
    let run = store.get_run(&id).await.unwrap();
    assert_eq!(run.control.rev, 1);
    assert_eq!(store.read_logs(&id, 0, 100).await.unwrap().len(), 2);
    // Releasing hands the run back; the old owner's guard then fails.
    let mut release = Transition::new(&id, Guard::default());
    release.owner = OwnerChange::Release;
    store.commit(release).await.unwrap();
    let stale = store
        .commit(guarded(Guard {
            owner: Some("node_a".into()),
            ..Guard::default()
        }))
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
}

pub async fn run_lists_filter_by_workflow_and_status_and_page(store: DynStore) {
    let wf_a = stored_workflow(&store).await;
    let wf_b = stored_workflow(&store).await;
    let mut a_ids = Vec::new();
    for _ in 0..5 {
        a_ids.push(stored_run(&store, &wf_a).await);
    }
    let b_id = stored_run(&store, &wf_b).await;
    let mut run = store.get_run(&a_ids[1]).await.unwrap();
    run.status = RunStatus::Succeeded;
    let mut tx = Transition::new(&run.id, Guard::default());
    tx.head = Some(RunHead::of(&run));
    store.commit(tx).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    let filter = RunFilter {
        workflow_id: Some(wf_a.clone()),
        ..RunFilter::default()
    };
    loop {
        let page = store
            .list_runs(&filter, &PageRequest { limit: 2, cursor })
            .await
            .unwrap();
        assert!(page.items.iter().all(|r| r.steps.len() == 3));
        seen.extend(page.items.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let newest_first: Vec<String> = a_ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let succeeded = store
        .list_runs(
            &RunFilter {
                workflow_id: Some(wf_a.clone()),
                statuses: vec![RunStatus::Succeeded],
                ..RunFilter::default()
            },
            &PageRequest {
                limit: 10,
                cursor: None,
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = succeeded.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec![a_ids[1].as_str()]);
    let pending = store
        .list_runs(
            &RunFilter {
                statuses: vec![RunStatus::Pending],
                ..RunFilter::default()
            },
            &PageRequest {
                limit: 100,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 5);
    assert_eq!(pending.items[0].id, b_id);
}

pub async fn idempotency_keys_return_the_first_run_for_the_same_body(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let mut first = new_run(&wf);
    first.idempotency = Some(claim("key-1", "hash-a", chrono::Duration::hours(24)));
    let created = store.create_run(first.clone()).await.unwrap();
    assert!(created.created);
    let mut repeat = new_run(&wf);
    repeat.idempotency = first.idempotency.clone();
    let again = store.create_run(repeat.clone()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.run.id, first.id);
    assert_eq!(again.run.steps.len(), 3);
    let missing = store.get_run(&repeat.id).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

pub async fn idempotency_keys_conflict_on_a_different_body(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let mut first = new_run(&wf);
    first.idempotency = Some(claim("key-2", "hash-a", chrono::Duration::hours(24)));
    store.create_run(first).await.unwrap();
    let mut other = new_run(&wf);
    other.idempotency = Some(claim("key-2", "hash-b", chrono::Duration::hours(24)));
    let refused = store.create_run(other).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
}

pub async fn expired_idempotency_keys_are_free_again_and_purged(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let mut first = new_run(&wf);
    first.idempotency = Some(claim("key-3", "hash-a", chrono::Duration::milliseconds(-1)));
    store.create_run(first.clone()).await.unwrap();
    let mut second = new_run(&wf);
    second.idempotency = Some(claim("key-3", "hash-b", chrono::Duration::hours(1)));
    let created = store.create_run(second.clone()).await.unwrap();
    assert!(created.created, "an expired key is free again");
    assert_eq!(created.run.id, second.id);
    let mut stale = new_run(&wf);
    stale.idempotency = Some(claim("key-4", "hash", chrono::Duration::milliseconds(-1)));
    store.create_run(stale).await.unwrap();
    assert_eq!(store.purge_expired(now()).await.unwrap(), 1);
    assert_eq!(store.purge_expired(now()).await.unwrap(), 0);
}

pub async fn concurrent_creates_with_one_key_make_one_run(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            let mut new = new_run(&wf);
            new.idempotency = Some(claim("key-5", "hash", chrono::Duration::hours(1)));
            tokio::spawn(async move { store.create_run(new).await.unwrap() })
        })
        .collect();
    let mut ids = BTreeSet::new();
    let mut created = 0;
    for task in tasks {
        let run = task.await.unwrap();
        created += usize::from(run.created);
        ids.insert(run.run.id);
    }
    assert_eq!((created, ids.len()), (1, 1));
}

pub async fn runs_are_counted_by_status(store: DynStore) {
    let wf = stored_workflow(&store).await;
    assert_eq!(store.count_runs(RunStatus::Pending).await.unwrap(), 0);
    let a = stored_run(&store, &wf).await;
    stored_run(&store, &wf).await;
    assert_eq!(store.count_runs(RunStatus::Pending).await.unwrap(), 2);
    let mut head = RunHead::of(&store.get_run(&a).await.unwrap());
    head.status = RunStatus::WaitingApproval;
    let mut tx = Transition::new(a.as_str(), Guard::default());
    tx.head = Some(head);
    store.commit(tx).await.unwrap();
    assert_eq!(store.count_runs(RunStatus::Pending).await.unwrap(), 1);
    assert_eq!(
        store.count_runs(RunStatus::WaitingApproval).await.unwrap(),
        1
    );
}

/// PostgreSQL only: a guarded commit runs without a savepoint of its own, so a database
/// error in it aborts its whole batch. Its batch mates (the commits before it, which ran,
/// and after it) run again in the next batch and are committed exactly once; it alone
/// fails, and nothing of it is stored, even by a commit whose statement was prepared on
/// first use after the others were sent. Twice in a row, the second time while every job
/// has its savepoint again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_database_refuses_fails_alone_and_its_batch_mates_commit_once() {
    use crate::fixtures::logs_only;
    use orchestrator::store::postgres::{PgOptions, PostgresStore};
    let dsn = crate::pg::fresh_database().await;
    // One writer, so that the commits queued while it waits all form its next batch.
    let options = PgOptions {
        dsn: dsn.clone(),
        pool_size: 4,
        statement_timeout: Duration::from_secs(30),
    };
    let store: DynStore = std::sync::Arc::new(PostgresStore::open(&options).await.unwrap());
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let wf = stored_workflow(&store).await;
    for round in 0..2 {
        let held = stored_run(&store, &wf).await;
        let mut good = Vec::new();
        for _ in 0..20 {
            good.push(stored_run(&store, &wf).await);
        }
        let bad = stored_run(&store, &wf).await;
        let before = store.get_run(&bad).await.unwrap().control.rev;
        // The writer's batch waits for a run whose row this transaction holds.
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", &[&held])
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let store = store.clone();
            let tx = logs_only(&held, 1);
            async move { store.commit(tx).await }
        });
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap();
            if row.get::<_, i64>(0) > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < give_up,
                "the writer never waited"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut poisoned = logs_only(&bad, 1);
        // PostgreSQL's text holds no NUL byte: the insert of this line fails in the database.
        poisoned.logs[0].message = "a NUL \0 byte".into();
        let (first, rest) = good.split_at(10);
        // The first commit has a shape of its own: its statement is prepared on first use,
        // a round trip before it is sent, and still runs inside the batch (rolled back
        // with it, not committed alone after the batch's end).
        let fresh = |(i, id): (usize, &String)| {
            let mut tx = logs_only(id, 1);
            if i == 0 {
                tx.guard.status_in = Some(vec![RunStatus::Pending, RunStatus::Succeeded]);
            }
            tx
        };
        let txs = first
            .iter()
            .enumerate()
            .map(fresh)
            .chain(std::iter::once(poisoned))
            .chain(rest.iter().map(|id| logs_only(id, 1)));
        let mut all = Box::pin(futures::future::join_all(
            txs.map(|tx| store.commit(tx)).collect::<Vec<_>>(),
        ));
        // Polled once: every commit is queued, behind the batch that waits.
        assert!(futures::poll!(&mut all).is_pending());
        client.batch_execute("ROLLBACK").await.unwrap();
        waiting.await.unwrap().unwrap();
        let mut results = all.await;
        let refused = results.remove(10);
        assert!(
            refused.is_err(),
            "round {round}: the poisoned commit failed"
        );
        for (id, result) in good.iter().zip(results) {
            result.unwrap_or_else(|e| panic!("round {round}: run {id} failed with it: {e}"));
            let logs = store.read_logs(id, 0, 100).await.unwrap();
            assert_eq!(logs.len(), 2, "round {round}: run {id} committed once");
        }
        assert_eq!(store.get_run(&bad).await.unwrap().control.rev, before);
        assert_eq!(store.read_logs(&bad, 0, 100).await.unwrap().len(), 1);
    }
}

pub async fn a_page_of_runs_with_large_outputs_ends_at_its_byte_bound_and_its_cursor_goes_on(
    store: DynStore,
) {
    let wf = stored_workflow(&store).await;
    let big = json!("o".repeat(1 << 20));
    let mut ids = Vec::new();
    for i in 0..8 {
        let mut run = new_run(&wf);
        for step in &mut run.steps {
            step.output = Some(big.clone());
        }
        ids.push(run.id.clone());
        // Half the runs get their outputs at the start, half from transitions after it.
        if i % 2 == 0 {
            store.create_run(run).await.unwrap();
            continue;
        }
        let steps: Vec<(usize, StepRun)> = run.steps.iter().cloned().enumerate().collect();
        run.steps.iter_mut().for_each(|s| s.output = None);
        let id = run.id.clone();
        store.create_run(run).await.unwrap();
        for step in steps {
            let mut tx = Transition::new(&id, Guard::default());
            tx.steps = vec![step];
            store.commit(tx).await.unwrap();
        }
    }
    let filter = RunFilter {
        workflow_id: Some(wf.clone()),
        ..RunFilter::default()
    };
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None, Vec::new());
    loop {
        let page = store
            .list_runs(&filter, &PageRequest { limit: 100, cursor })
            .await
            .unwrap();
        for run in &page.items {
            assert_eq!(run.steps.len(), 3, "every step of a run listed");
            assert!(run.steps.iter().all(|s| s.output.as_ref() == Some(&big)));
        }
        pages.push(page.items.len());
        seen.extend(page.items.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // 3 MiB of outputs per run: five runs fit in 16 MiB, the sixth would pass it.
    assert_eq!(pages, vec![5, 3]);
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    // A page that holds one run alone is never empty, however large the run.
    let one = store
        .list_runs(
            &filter,
            &PageRequest {
                limit: 1,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
    assert_eq!(one.next_cursor.as_deref(), Some(ids[7].as_str()));
}
