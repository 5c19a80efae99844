//! The embedded store's write-ahead log stays under its bound while the writer and readers
//! never pause, and a clean stop leaves it empty.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orchestrator::model::RunStatus;
use orchestrator::store::DynStore;
use orchestrator::store::sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;

use crate::fixtures::{context, new_run, stored_workflow};

const BOUND: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_bounded_under_writes_and_reads_that_never_pause() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let wal = dir.path().join("store.db-wal");
    let options = SqliteOptions {
        synchronous_full: false,
        read_connections: 2,
        wal_max_bytes: BOUND,
    };
    let store: DynStore = Arc::new(SqliteStore::open_with(&db, &options).unwrap());
    let workflow = stored_workflow(&store).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // Readers that always have a read in progress somewhere.
    for _ in 0..4 {
        let (store, stop) = (store.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = store.list_runs(&Default::default(), &page()).await;
            }
        }));
    }
    // Writers: runs with a 4 KiB context, many commits a second.
    for _ in 0..4 {
        let (store, stop, workflow) = (store.clone(), stop.clone(), workflow.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut run = new_run(&workflow);
                run.context = context(json!({"blob": "x".repeat(4096)}));
                store.create_run(run).await.unwrap();
            }
        }));
    }
    // Sample the WAL until enough was written to pass the bound many times over (the
    // 4 KiB contexts alone: eight bounds' worth), or a generous time has passed.
    let mut largest = 0;
    let mut samples = 0;
    let give_up = Instant::now() + Duration::from_secs(240);
    while Instant::now() < give_up {
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        largest = largest.max(size);
        samples += 1;
        if samples % 100 == 0 {
            let runs = store.count_runs(RunStatus::Pending).await.unwrap();
            if runs * 4096 > 8 * BOUND {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let runs = store.count_runs(RunStatus::Pending).await.unwrap();
    assert!(runs * 4096 > 8 * BOUND, "only {runs} runs were written");
    assert!(
        largest <= BOUND,
        "the WAL reached {largest} bytes (bound {BOUND}) over {samples} samples"
    );
    store.close().await.unwrap();
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
}

fn page() -> orchestrator::model::PageRequest {
    orchestrator::model::PageRequest {
        limit: 20,
        cursor: None,
    }
}
