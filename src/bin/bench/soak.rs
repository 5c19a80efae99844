//! Soak: W10 runs driven without pause for many minutes by clients that poll their runs
//! (as API users do), sampled every minute, to see what drifts over time on one store:
//! throughput, server CPU per step, the write-ahead log against its bound, the database
//! file and resident memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::growth::run_and_poll;
use crate::mib;
use crate::scenarios::Client;
use crate::server::Server;

/// One minute (or whatever `every` is) of the soak.
pub struct Sample {
    pub minute: usize,
    pub runs_per_s: f64,
    pub cpu_us_per_step: f64,
    pub db_bytes: u64,
    pub wal_peak: u64,
    pub rss: u64,
    pub runs_done: u64,
}

/// Drives `in_flight` clients for `length`, each starting a W10 run of `workflow` and
/// reading it every `poll` until it ends, then starting the next; samples every `every`.
pub async fn soak(
    server: &Server,
    client: &Client,
    workflow: &str,
    in_flight: usize,
    length: Duration,
    every: Duration,
    poll: Duration,
) -> anyhow::Result<Vec<Sample>> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..in_flight)
        .map(|_| {
            let (client, workflow, done, stop, polls) = (
                client.clone(),
                workflow.to_owned(),
                done.clone(),
                stop.clone(),
                polls.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    run_and_poll(&client, &workflow, poll, &polls).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut minute = 0;
    while started.elapsed() < length {
        minute += 1;
        let (runs_before, cpu_before, since) = (
            done.load(Ordering::Relaxed),
            server.cpu_seconds(),
            Instant::now(),
        );
        let mut wal_peak = 0;
        while since.elapsed() < every {
            wal_peak = wal_peak.max(server.store_bytes().1);
            if clients.iter().any(|c| c.is_finished()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if clients.iter().any(|c| c.is_finished()) {
            break;
        }
        let runs = done.load(Ordering::Relaxed) - runs_before;
        let secs = since.elapsed().as_secs_f64();
        let sample = Sample {
            minute,
            runs_per_s: runs as f64 / secs,
            cpu_us_per_step: (server.cpu_seconds() - cpu_before) * 1e6 / (runs.max(1) * 10) as f64,
            db_bytes: server.store_bytes().0,
            wal_peak,
            rss: server.rss(),
            runs_done: done.load(Ordering::Relaxed),
        };
        println!(
            "  {:>6} {:>9.0} {:>12.0} {:>10.1} {:>10.1} {:>9.1} {:>10}",
            sample.minute,
            sample.runs_per_s,
            sample.cpu_us_per_step,
            mib(sample.db_bytes),
            mib(sample.wal_peak),
            mib(sample.rss),
            sample.runs_done
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await??;
    }
    Ok(samples)
}

/// What the issue asks of a soak: throughput of the last `window` samples against the
/// first's, and resident memory's spread after the first sample (the warm-up).
pub struct Drift {
    /// Samples averaged at each end.
    pub window: usize,
    pub first_runs_per_s: f64,
    pub last_runs_per_s: f64,
    pub rss_min: u64,
    pub rss_max: u64,
    pub wal_peak: u64,
}

pub fn drift(samples: &[Sample], window: usize) -> Option<Drift> {
    let window = window.min(samples.len() / 2).max(1);
    if samples.len() < 2 {
        return None;
    }
    let mean = |s: &[Sample]| s.iter().map(|x| x.runs_per_s).sum::<f64>() / s.len() as f64;
    let steady = &samples[1..];
    Some(Drift {
        window,
        first_runs_per_s: mean(&samples[..window]),
        last_runs_per_s: mean(&samples[samples.len() - window..]),
        rss_min: steady.iter().map(|s| s.rss).min()?,
        rss_max: steady.iter().map(|s| s.rss).max()?,
        wal_peak: samples.iter().map(|s| s.wal_peak).max()?,
    })
}
