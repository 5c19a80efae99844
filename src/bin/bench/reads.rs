//! The cost of reading one run: server CPU per `GET /v1/runs/{id}` of a 10-step run while
//! it executes on this server (answered from the engine's view of its latest commit) and
//! once it has finished (read from the store), and per page of the run list.
//!
//! The run is R10: W10 whose tenth step calls the target's `/hold`, which answers only
//! when the scenario releases it, so the run stays `RUNNING` with nine finished steps (and
//! their outputs) for as long as the reads are measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::scenarios::Client;
use crate::server::Server;
use crate::target::Target;

/// R10: nine GETs, then one the target holds until [`Target::release`].
pub fn r10(target: &str) -> Value {
    let mut steps: Vec<Value> = (1..10)
        .map(|i| json!({"name": format!("s{i}"), "action": "http", "input": {"method": "GET", "url": format!("{target}/ok")}}))
        .collect();
    steps.push(
        json!({"name": "s10", "action": "http", "timeout_ms": 600_000,
        "input": {"method": "GET", "url": format!("{target}/hold")}}),
    );
    json!({"name": "r10", "steps": steps})
}

/// One window of reads.
#[derive(Debug, Clone, Copy)]
pub struct Reads {
    pub reads_per_s: f64,
    /// Server CPU time (user + system) per read, in microseconds.
    pub cpu_us_per_read: f64,
    /// Size of one answer's body.
    pub bytes: usize,
}

/// Polls `run` (every millisecond, for up to a minute) until `ready` holds for it.
pub async fn until(
    client: &Client,
    run: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = client.get(&format!("/v1/runs/{run}")).await?;
        if ready(&body) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("run {run} not {what} after a minute: {body}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `readers` clients read `path` back to back for `window`; every answer must be 200.
pub async fn hammer(
    server: &Server,
    client: &Client,
    path: &str,
    readers: usize,
    window: Duration,
) -> anyhow::Result<Reads> {
    let count = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let workers: Vec<_> = (0..readers)
        .map(|_| {
            let (client, path, count, bytes) = (
                client.clone(),
                path.to_owned(),
                count.clone(),
                bytes.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let body = client.get_bytes(&path).await?;
                    bytes.store(body as u64, Ordering::Relaxed);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in workers {
        w.await.context("reader")??;
    }
    let secs = started.elapsed().as_secs_f64();
    let reads = count.load(Ordering::Relaxed) as f64;
    Ok(Reads {
        reads_per_s: reads / secs,
        cpu_us_per_read: (server.cpu_seconds() - cpu_before) * 1e6 / reads.max(1.0),
        bytes: bytes.load(Ordering::Relaxed) as usize,
    })
}

/// Starts an R10 run and waits until its tenth step is in flight; returns the run's id.
pub async fn held_run(client: &Client, workflow: &str) -> anyhow::Result<String> {
    let run = client.start(workflow, "held").await?;
    until(client, &run, "at its tenth step", |r| {
        r["status"] == "RUNNING" && r["steps"][9]["status"] == "RUNNING"
    })
    .await?;
    Ok(run)
}

/// Lets the held step answer and waits until the run has succeeded.
pub async fn finish(client: &Client, target: &Target, run: &str) -> anyhow::Result<()> {
    target.release();
    until(client, run, "finished", |r| r["status"] == "SUCCEEDED").await
}
