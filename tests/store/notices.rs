//! PostgreSQL only: what one store commits is announced to the other stores on the same
//! database (replicas), and not echoed to itself. The embedded store has no notices.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::store::{DynStore, Guard, Notice, OwnerChange, Store, Transition};
use tokio::sync::broadcast;

use crate::fixtures::{logs_only, stored_run, stored_workflow};

/// The next notice about `run_id`, skipping others; panics after a generous bound.
async fn next_about(rx: &mut broadcast::Receiver<Notice>, run_id: &str) -> Notice {
    let wait = async {
        loop {
            match rx.recv().await.unwrap() {
                n @ Notice::Run { .. } if matches!(&n, Notice::Run { run_id: r, .. } if r == run_id) =>
                {
                    return n;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("a notice within 10 s")
}

/// Commits probes on `writer` until `rx` hears one: its listener is connected then.
async fn listening(writer: &DynStore, rx: &mut broadcast::Receiver<Notice>, wf: &str) {
    let probe = stored_run(writer, wf).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        writer.commit(logs_only(&probe, 1)).await.unwrap();
        let heard = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                if let Ok(Notice::Run { run_id, .. }) = rx.recv().await
                    && run_id == probe
                {
                    return;
                }
            }
        });
        if heard.await.is_ok() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never connected"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_on_one_replica_are_announced_to_the_others_and_not_to_itself() {
    let dsn = crate::pg::fresh_database().await;
    let one: DynStore = Arc::new(crate::open_postgres(&dsn).await);
    let two = crate::open_postgres(&dsn).await;
    let mut heard_by_two = two.notices().expect("PostgreSQL has notices");
    let mut heard_by_one = one.notices().expect("PostgreSQL has notices");
    let wf = stored_workflow(&one).await;
    let two_dyn: DynStore = Arc::new(crate::open_postgres(&dsn).await);
    listening(&one, &mut heard_by_two, &wf).await;
    listening(&two_dyn, &mut heard_by_one, &wf).await;
    let run_id = stored_run(&one, &wf).await;
    assert_eq!(
        next_about(&mut heard_by_two, &run_id).await,
        Notice::Run {
            run_id: run_id.clone(),
            rev: None,
            logs: Some((1, 1)),
            claimable: true
        }
    );
    let mut tx = logs_only(&run_id, 2);
    tx.owner = OwnerChange::Release;
    one.commit(tx).await.unwrap();
    assert_eq!(
        next_about(&mut heard_by_two, &run_id).await,
        Notice::Run {
            run_id: run_id.clone(),
            rev: Some(1),
            logs: Some((2, 3)),
            claimable: true
        }
    );
    two.commit(Transition::new(run_id.as_str(), Guard::default()))
        .await
        .unwrap();
    match next_about(&mut heard_by_one, &run_id).await {
        Notice::Run { rev, .. } => assert_eq!(rev, Some(2), "store one hears only store two"),
        other => panic!("{other:?}"),
    }
}
