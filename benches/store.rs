//! Store comparison: the write pattern of the engine running a 10-step workflow, with a
//! fixed number of runs in flight, against the embedded SQLite store and PostgreSQL.
//!
//! Each run is created, then every step is committed twice (started, succeeded with an
//! output and a log line), then the run finishes and releases its lease: 22 guarded
//! commits per run, as the engine makes them. Prints runs/s and steps/s (medians of the
//! repeats, with min–max). PostgreSQL is measured with `synchronous_commit` on (its
//! default: a commit waits for the WAL flush) and off (closer to SQLite's `NORMAL`).
//! Run through `scripts/bench-store.sh`, which starts PostgreSQL.
//!
//! Options: `--runs N` (per repeat, default 2000), `--in-flight N` (default 50),
//! `--repeat N` (default 3). PostgreSQL DSN: `BENCH_POSTGRES_DSN` or `TEST_POSTGRES_DSN`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orchestrator::model::{LogLevel, NewLogEntry, RunStatus, StepRun, StepStatus, now};
use orchestrator::store::postgres::{PgOptions, PostgresStore};
use orchestrator::store::sqlite::SqliteStore;
use orchestrator::store::{
    DynStore, Guard, Lease, NewRun, NewWorkflowVersion, OwnerChange, RunHead, Transition,
};
use serde_json::json;

const STEPS: usize = 10;
const OWNER: &str = "node_bench";

struct Options {
    runs: usize,
    in_flight: usize,
    repeat: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Options {
        runs: value("--runs", 2000),
        in_flight: value("--in-flight", 50),
        repeat: value("--repeat", 3),
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("store benchmark: run scripts/bench-store.sh");
        return Ok(());
    }
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dsn = std::env::var("BENCH_POSTGRES_DSN")
            .or_else(|_| std::env::var("TEST_POSTGRES_DSN"))
            .map_err(|_| anyhow::anyhow!("set BENCH_POSTGRES_DSN (scripts/bench-store.sh does)"))?;
        println!(
            "workload: {STEPS}-step runs, {} in flight, {} runs per repeat, {} repeats",
            options.in_flight, options.runs, options.repeat
        );
        let mut sqlite = Vec::new();
        let mut postgres = Vec::new();
        let mut postgres_async = Vec::new();
        for _ in 0..options.repeat {
            let dir = tempfile::tempdir()?;
            let store: DynStore =
                Arc::new(SqliteStore::open(&dir.path().join("bench.db"), false, 4)?);
            sqlite.push(workload(store, &options).await?);
            for (synchronous, results) in [(true, &mut postgres), (false, &mut postgres_async)] {
                let db = fresh_database(&dsn, synchronous).await?;
                let store: DynStore = Arc::new(
                    PostgresStore::open(&PgOptions {
                        dsn: db,
                        pool_size: 16,
                        statement_timeout: Duration::from_secs(30),
                    })
                    .await?,
                );
                results.push(workload(store, &options).await?);
            }
        }
        report("SQLite (WAL, synchronous=NORMAL)", &mut sqlite);
        report("PostgreSQL (synchronous_commit=on)", &mut postgres);
        report("PostgreSQL (synchronous_commit=off)", &mut postgres_async);
        Ok(())
    })
}

fn report(name: &str, runs_per_second: &mut [f64]) {
    runs_per_second.sort_by(f64::total_cmp);
    let median = runs_per_second[runs_per_second.len() / 2];
    let (min, max) = (
        runs_per_second[0],
        runs_per_second[runs_per_second.len() - 1],
    );
    println!(
        "{name}: {median:.0} runs/s ({min:.0}–{max:.0}), {:.0} steps/s ({:.0}–{:.0})",
        median * STEPS as f64,
        min * STEPS as f64,
        max * STEPS as f64
    );
}

/// A new database; without `synchronous`, its commits do not wait for the WAL flush.
async fn fresh_database(admin: &str, synchronous: bool) -> anyhow::Result<String> {
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let name = format!("bench_{}", orchestrator::ids::new("").to_lowercase());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    if !synchronous {
        client
            .batch_execute(&format!(
                "ALTER DATABASE {name} SET synchronous_commit = off"
            ))
            .await?;
    }
    drop(client);
    let _ = driver.await;
    let (base, _) = admin
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("the DSN names no database"))?;
    Ok(format!("{base}/{name}"))
}

/// Runs `options.runs` runs, `options.in_flight` at a time; returns runs per second.
async fn workload(store: DynStore, options: &Options) -> anyhow::Result<f64> {
    let wf = orchestrator::ids::new("wf_");
    store
        .create_workflow(NewWorkflowVersion {
            id: wf.clone(),
            name: "bench".into(),
            definition: json!({"name": "bench", "steps": []}),
            created_by: None,
            restored_from: None,
        })
        .await?;
    let left = Arc::new(AtomicUsize::new(options.runs));
    let started = Instant::now();
    let workers: Vec<_> = (0..options.in_flight)
        .map(|_| {
            let (store, wf, left) = (store.clone(), wf.clone(), left.clone());
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    one_run(&store, &wf).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(options.runs as f64 / started.elapsed().as_secs_f64())
}

fn log(message: String, step: Option<&str>) -> NewLogEntry {
    NewLogEntry::engine(LogLevel::Info, step, message)
}

async fn one_run(store: &DynStore, wf: &str) -> anyhow::Result<()> {
    let steps: Vec<StepRun> = (0..STEPS)
        .map(|i| StepRun::pending(format!("s{i}"), format!("step{i}"), "http".into()))
        .collect();
    let created = store
        .create_run(NewRun {
            id: orchestrator::ids::new("run_"),
            workflow_id: wf.to_owned(),
            workflow_version: 1,
            context: json!({"input": "x"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            steps,
            parent: None,
            owner: Some(Lease {
                owner: OWNER.into(),
                ttl: Duration::from_secs(30),
            }),
            idempotency: None,
            logs: vec![log("run created".into(), None)],
            events: Vec::new(),
        })
        .await?;
    let mut run = created.run;
    let guard = Guard {
        rev: None,
        owner: Some(OWNER.into()),
        status_in: Some(vec![RunStatus::Pending, RunStatus::Running]),
    };
    run.status = RunStatus::Running;
    run.started_at = Some(now());
    for i in 0..STEPS {
        let name = run.steps[i].name.clone();
        run.steps[i].status = StepStatus::Running;
        run.steps[i].started_at = Some(now());
        run.current_step = i;
        let mut tx = Transition::new(run.id.as_str(), guard.clone());
        tx.head = Some(RunHead::of(&run));
        tx.steps = vec![(i, run.steps[i].clone())];
        tx.logs = vec![log(format!("step {name} started"), Some(&name))];
        store.commit(tx).await?;
        run.steps[i].status = StepStatus::Succeeded;
        run.steps[i].finished_at = Some(now());
        run.steps[i].http_code = Some(200);
        run.steps[i].output = Some(json!({"status": 200, "body": {"ok": true, "i": i}}));
        let mut tx = Transition::new(run.id.as_str(), guard.clone());
        tx.head = Some(RunHead::of(&run));
        tx.steps = vec![(i, run.steps[i].clone())];
        tx.logs = vec![log(format!("step {name} succeeded"), Some(&name))];
        store.commit(tx).await?;
    }
    run.status = RunStatus::Succeeded;
    run.finished_at = Some(now());
    run.current_step = STEPS;
    let mut tx = Transition::new(run.id.as_str(), guard);
    tx.head = Some(RunHead::of(&run));
    tx.owner = OwnerChange::Release;
    tx.logs = vec![log("run succeeded".into(), None)];
    store.commit(tx).await?;
    Ok(())
}
