//! Run logs (sequence numbers, limits, paging) and the hook outbox with its cursors.

use orchestrator::model::{LogLevel, LogSource, NewLogEntry};
use orchestrator::store::{DynStore, Guard, LogLimits, StoreError, Transition};

use crate::fixtures::{event, logs_only, stored_run, stored_workflow};

fn client_lines(n: usize) -> Vec<NewLogEntry> {
    (0..n)
        .map(|i| NewLogEntry {
            source: LogSource::Client,
            ..NewLogEntry::engine(LogLevel::Info, None, format!("client {i}"))
        })
        .collect()
}

const ROOMY: LogLimits = LogLimits { max_entries: 1000 };

pub async fn log_entries_are_numbered_in_commit_order(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let id = stored_run(&store, &wf).await;
    let committed = store.commit(logs_only(&id, 2)).await.unwrap();
    let seqs: Vec<u64> = committed.logs.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![2, 3]);
    let appended = store
        .append_logs(&id, client_lines(2), ROOMY)
        .await
        .unwrap();
    let seqs: Vec<u64> = appended.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![4, 5]);
    // Concurrent writers of one run never share or skip a number.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store.commit(logs_only(&id, 3)).await.map(|c| c.logs)
                } else {
                    store.append_logs(&id, client_lines(3), ROOMY).await
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let all = store.read_logs(&id, 0, 1000).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=35).collect::<Vec<_>>());
    assert_eq!(all[3].source, LogSource::Client);
    assert_eq!(all[3].message, "client 0");
    let missing = store
        .append_logs("run_missing", client_lines(1), ROOMY)
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

pub async fn client_appends_respect_the_log_limit(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let id = stored_run(&store, &wf).await;
    let limits = LogLimits { max_entries: 4 };
    store
        .append_logs(&id, client_lines(2), limits)
        .await
        .unwrap();
    let refused = store.append_logs(&id, client_lines(2), limits).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(store.read_logs(&id, 0, 100).await.unwrap().len(), 3);
    store
        .append_logs(&id, client_lines(1), limits)
        .await
        .unwrap();
    assert_eq!(store.read_logs(&id, 0, 100).await.unwrap().len(), 4);
}

pub async fn log_reads_page_after_a_sequence_number(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let id = stored_run(&store, &wf).await;
    store.commit(logs_only(&id, 9)).await.unwrap();
    let page = store.read_logs(&id, 3, 4).await.unwrap();
    let seqs: Vec<u64> = page.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![4, 5, 6, 7]);
    assert!(store.read_logs(&id, 10, 4).await.unwrap().is_empty());
    let missing = store.read_logs("run_missing", 0, 10).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

pub async fn events_go_to_the_outbox_with_per_run_sequence_numbers(store: DynStore) {
    let wf = stored_workflow(&store).await;
    let a = stored_run(&store, &wf).await;
    let b = stored_run(&store, &wf).await;
    for (run, kinds) in [
        (&a, vec!["run.started", "step.started"]),
        (&b, vec!["run.started"]),
        (&a, vec!["step.succeeded"]),
    ] {
        let mut tx = Transition::new(run.as_str(), Guard::default());
        tx.events = kinds.into_iter().map(event).collect();
        store.commit(tx).await.unwrap();
    }
    let events = store.read_events(0, 100).await.unwrap();
    let seen: Vec<(&str, u64, &str)> = events
        .iter()
        .map(|e| (e.run_id.as_str(), e.seq, e.event.kind.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (a.as_str(), 1, "run.started"),
            (a.as_str(), 2, "step.started"),
            (b.as_str(), 1, "run.started"),
            (a.as_str(), 3, "step.succeeded"),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert!(events.iter().all(|e| e.workflow_id == wf));
    let rest = store.read_events(events[1].id, 100).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(store.read_events(events[1].id, 1).await.unwrap().len(), 1);
}

pub async fn event_cursors_only_move_forward(store: DynStore) {
    assert_eq!(store.event_cursor("memarch").await.unwrap(), 0);
    store.set_event_cursor("memarch", 7).await.unwrap();
    store.set_event_cursor("memarch", 3).await.unwrap();
    assert_eq!(store.event_cursor("memarch").await.unwrap(), 7);
    assert_eq!(store.event_cursor("audit_log").await.unwrap(), 0);
}
