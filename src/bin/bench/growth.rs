//! Growth: W10 runs driven as API users drive them — each client starts a run and reads
//! `GET /v1/runs/{id}` until it has ended — in consecutive batches on one store, to see
//! what grows as finished runs pile up: throughput, server CPU, the database file, the
//! write-ahead log, and memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::scenarios::{Client, for_each_concurrently};
use crate::server::Server;

/// One batch, measured.
pub struct Batch {
    pub runs_done: u64,
    pub runs_per_s: f64,
    pub cpu_us_per_step: f64,
    pub db_bytes: u64,
    pub wal_bytes: u64,
    pub wal_peak: u64,
    pub rss: u64,
    pub polls_per_run: f64,
}

/// Runs `batches` batches of `per_batch` W10 runs of `workflow`, `in_flight` at a time,
/// each client polling its run every `poll` until it ends.
pub async fn growth(
    server: &Server,
    client: &Client,
    workflow: &str,
    batches: usize,
    per_batch: usize,
    in_flight: usize,
    poll: Duration,
) -> anyhow::Result<Vec<Batch>> {
    let mut out = Vec::new();
    let mut done = 0u64;
    for _ in 0..batches {
        let polls = Arc::new(AtomicU64::new(0));
        let cpu_before = server.cpu_seconds();
        let started = Instant::now();
        let work = for_each_concurrently(per_batch, in_flight, {
            let (client, workflow, polls) = (client.clone(), workflow.to_owned(), polls.clone());
            move |_| {
                let (client, workflow, polls) = (client.clone(), workflow.clone(), polls.clone());
                async move { run_and_poll(&client, &workflow, poll, &polls).await }
            }
        });
        tokio::pin!(work);
        let mut wal_peak = 0;
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    wal_peak = wal_peak.max(server.store_bytes().1);
                }
            }
        };
        result?;
        let secs = started.elapsed().as_secs_f64();
        done += per_batch as u64;
        let (db_bytes, wal_bytes) = server.store_bytes();
        out.push(Batch {
            runs_done: done,
            runs_per_s: per_batch as f64 / secs,
            cpu_us_per_step: (server.cpu_seconds() - cpu_before) * 1e6 / (per_batch * 10) as f64,
            db_bytes,
            wal_bytes,
            wal_peak: wal_peak.max(wal_bytes),
            rss: server.rss(),
            polls_per_run: polls.load(Ordering::Relaxed) as f64 / per_batch as f64,
        });
    }
    Ok(out)
}

/// Starts a run and reads it every `poll` until it has ended.
pub async fn run_and_poll(
    client: &Client,
    workflow: &str,
    poll: Duration,
    polls: &AtomicU64,
) -> anyhow::Result<()> {
    let run = client
        .post(
            "/v1/runs",
            &json!({"workflow_id": workflow, "context": {"tag": "growth"}}),
        )
        .await?;
    let id = run["id"].as_str().unwrap_or_default().to_owned();
    loop {
        tokio::time::sleep(poll).await;
        polls.fetch_add(1, Ordering::Relaxed);
        let run = client.get(&format!("/v1/runs/{id}")).await?;
        match run["status"].as_str() {
            Some("SUCCEEDED") => return Ok(()),
            Some("FAILED" | "CANCELED") => bail!("run {id} ended {}", run["status"]),
            _ => {}
        }
    }
}
