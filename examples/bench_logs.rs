//! Benchmark of run-log streaming: entries appended per second while many SSE subscribers
//! tail one run, and the delay from append to delivery (median, p99).
//!
//! ```text
//! cargo run --release --example bench_logs -- [--subscribers 1000] [--seconds 10]
//!     [--producers 4] [--rate 100]
//! ```
//!
//! The server runs in this process on 127.0.0.1 (a free port) with a fresh SQLite store in
//! a temporary directory (`synchronous=normal`, the default). One run is parked at an
//! approval so it stays live; the subscribers open `…/logs/stream` from the start and
//! parse it with a maintained SSE parser; producers `POST …/logs` one line at a time
//! stamped with the time the request was sent. Three phases, each on a fresh run:
//! 1. `baseline`: producers as fast as they can, no subscribers;
//! 2. `saturated`: producers as fast as they can, with the subscribers;
//! 3. `paced`: producers at `--rate` entries/s in all, with the subscribers.
//!
//! After the producers stop, the run is canceled; every subscriber must then receive
//! `end` having seen every entry exactly once and in order, or the benchmark fails.
//! Delays are measured on every 10th subscriber (all of its entries), client clock to
//! client clock: append request sent → event parsed by the subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use orchestrator::app::App;
use orchestrator::config::{Config, RawConfig};
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// SSE subscribers tailing the run.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Length of each phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent producers, each posting one line per request.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Entries per second, over all producers, in the paced phase.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Entries the run's live feed buffers (`logs.feed_capacity`).
    #[arg(long, default_value_t = orchestrator::config::raw::DEFAULT_FEED_CAPACITY)]
    feed_capacity: usize,
}

/// What one subscriber saw.
struct Seen {
    last_seq: u64,
    in_order: bool,
    ended_at: Option<u64>,
    delays_us: Vec<u64>,
}

/// What one phase measured.
struct Phase {
    name: &'static str,
    appended: u64,
    elapsed: Duration,
    seen: Vec<Seen>,
    cpu: Cpu,
}

/// CPU seconds spent by this process's threads during a phase: the HTTP server's workers
/// (which write the SSE streams) and everything else (the engine, the store's threads,
/// and the benchmark's own clients, which parse the streams).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    server: f64,
    other: f64,
}

impl Cpu {
    /// Reads `/proc/self/task/*/stat` (Linux); zero elsewhere.
    fn now() -> Self {
        let mut cpu = Self::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return cpu;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ...`: fields after the closing parenthesis; utime and stime
            // are the 12th and 13th of those, in clock ticks (100 per second).
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = fields
                .get(11..13)
                .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
                .unwrap_or(0.0);
            if head.contains("(actix-server w") {
                cpu.server += ticks / 100.0;
            } else {
                cpu.other += ticks / 100.0;
            }
        }
        cpu
    }

    fn since(self, start: Self) -> Self {
        Self {
            server: self.server - start.server,
            other: self.other - start.other,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut raw = RawConfig::default();
    raw.server.port = 0;
    raw.database.path = dir.path().join("bench.db");
    raw.logs.max_entries_per_run = 100_000_000;
    raw.logs.max_streams = args.subscribers + 100;
    raw.logs.feed_capacity = args.feed_capacity;
    raw.log.level = "warn".into();
    let config = Config::from_raw(Path::new("bench"), raw).map_err(anyhow::Error::msg)?;
    orchestrator::telemetry::init(&config.log);
    let app = App::build(config).await?;
    let base = format!("http://{}", app.address());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    let bench = Bench::new(base).await?;
    println!(
        "machine: {} cores, load average {}; subscribers {}, producers {}, {} s per phase, paced rate {}/s",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load(),
        args.subscribers,
        args.producers,
        args.seconds,
        args.rate
    );
    let phases = [
        bench.phase("baseline", 0, &args, None).await?,
        bench
            .phase("saturated", args.subscribers, &args, None)
            .await?,
        bench
            .phase("paced", args.subscribers, &args, Some(args.rate))
            .await?,
    ];
    for phase in &phases {
        report(phase)?;
    }
    println!("load average after: {}", load());
    let _ = stop.send(());
    server.await??;
    Ok(())
}

struct Bench {
    base: String,
    client: reqwest::Client,
    workflow: String,
    epoch: Instant,
}

impl Bench {
    async fn new(base: String) -> anyhow::Result<Self> {
        let client = reqwest::Client::new();
        let definition = json!({"name": "bench", "steps": [
            {"name": "gate", "action": "transform", "requires_approval": true,
             "input": {"set": {"ok": true}}}
        ]});
        let created: Value = client
            .post(format!("{base}/v1/workflows"))
            .json(&definition)
            .send()
            .await?
            .json()
            .await?;
        let workflow = created["id"].as_str().context("workflow id")?.to_owned();
        Ok(Self {
            base,
            client,
            workflow,
            epoch: Instant::now(),
        })
    }

    /// A fresh run, parked at its approval.
    async fn parked_run(&self) -> anyhow::Result<String> {
        let run: Value = self
            .client
            .post(format!("{}/v1/runs", self.base))
            .json(&json!({"workflow_id": self.workflow}))
            .send()
            .await?
            .json()
            .await?;
        let id = run["id"].as_str().context("run id")?.to_owned();
        for _ in 0..1000 {
            let run: Value = self
                .client
                .get(format!("{}/v1/runs/{id}", self.base))
                .send()
                .await?
                .json()
                .await?;
            if run["status"] == "WAITING_APPROVAL" {
                return Ok(id);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("run {id} did not park")
    }

    async fn phase(
        &self,
        name: &'static str,
        subscribers: usize,
        args: &Args,
        rate: Option<u64>,
    ) -> anyhow::Result<Phase> {
        let run = self.parked_run().await?;
        let (ready_tx, mut ready) = mpsc::channel(subscribers.max(1));
        let mut readers = Vec::with_capacity(subscribers);
        let stream_client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?;
        for i in 0..subscribers {
            let url = format!("{}/v1/runs/{run}/logs/stream", self.base);
            let (client, ready, epoch) = (stream_client.clone(), ready_tx.clone(), self.epoch);
            readers.push(tokio::spawn(subscribe(
                client,
                url,
                ready,
                epoch,
                i % 10 == 0,
            )));
        }
        for _ in 0..subscribers {
            ready.recv().await.context("a subscriber failed to start")?;
        }
        let cpu_start = Cpu::now();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(args.seconds);
        let mut producers = Vec::new();
        for _ in 0..args.producers {
            let url = format!("{}/v1/runs/{run}/logs", self.base);
            let pace = rate.map(|r| Duration::from_secs_f64(args.producers as f64 / r as f64));
            producers.push(tokio::spawn(produce(
                self.client.clone(),
                url,
                self.epoch,
                deadline,
                pace,
            )));
        }
        let mut appended = 0;
        for producer in producers {
            appended += producer.await??;
        }
        let elapsed = started.elapsed();
        let cancel = self
            .client
            .post(format!("{}/v1/runs/{run}/cancel", self.base))
            .send()
            .await?;
        ensure!(
            cancel.status() == 200,
            "cancel answered {}",
            cancel.status()
        );
        let mut seen = Vec::with_capacity(subscribers);
        for reader in readers {
            seen.push(reader.await??);
        }
        Ok(Phase {
            name,
            appended,
            elapsed,
            seen,
            cpu: Cpu::now().since(cpu_start),
        })
    }
}

async fn produce(
    client: reqwest::Client,
    url: String,
    epoch: Instant,
    deadline: Instant,
    pace: Option<Duration>,
) -> anyhow::Result<u64> {
    let mut ticks = pace.map(|p| {
        let mut t = tokio::time::interval(p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut count = 0;
    while Instant::now() < deadline {
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        let stamp = format!("t={}", epoch.elapsed().as_micros());
        let response = client.post(&url).body(stamp).send().await?;
        ensure!(
            response.status() == 201,
            "append answered {}",
            response.status()
        );
        count += 1;
    }
    Ok(count)
}

async fn subscribe(
    client: reqwest::Client,
    url: String,
    ready: mpsc::Sender<()>,
    epoch: Instant,
    measure: bool,
) -> anyhow::Result<Seen> {
    let response = client.get(&url).send().await?;
    ensure!(
        response.status() == 200,
        "stream answered {}",
        response.status()
    );
    let mut events = response.bytes_stream().eventsource();
    let mut seen = Seen {
        last_seq: 0,
        in_order: true,
        ended_at: None,
        delays_us: Vec::new(),
    };
    let mut live = false;
    while let Some(event) = events.next().await {
        let event = event?;
        match event.event.as_str() {
            "log" => {
                let seq: u64 = event.id.parse()?;
                seen.in_order &= seq == seen.last_seq + 1;
                seen.last_seq = seq;
                if measure && let Some(sent) = stamp(&event.data) {
                    let now = epoch.elapsed().as_micros() as u64;
                    seen.delays_us.push(now.saturating_sub(sent));
                }
                if !live && event.data.contains("waiting for approval of") {
                    live = true;
                    ready.send(()).await?;
                }
            }
            "end" => {
                let end: Value = serde_json::from_str(&event.data)?;
                seen.ended_at = end["last_seq"].as_u64();
                break;
            }
            _ => {}
        }
    }
    Ok(seen)
}

/// Server CPU per delivered event, when there were deliveries.
fn per_delivery(phase: &Phase) -> String {
    let deliveries: u64 = phase.seen.iter().map(|s| s.last_seq).sum();
    if deliveries == 0 {
        return String::new();
    }
    format!(
        " ({:.2} µs server CPU per delivery)",
        phase.cpu.server * 1e6 / deliveries as f64
    )
}

/// The machine's load average, to judge how much other work shared the cores.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The send time stamped into a producer's line (`t=<µs since the epoch>`).
fn stamp(data: &str) -> Option<u64> {
    let at = data.find("\"message\":\"t=")? + "\"message\":\"t=".len();
    let digits: String = data[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn report(phase: &Phase) -> anyhow::Result<()> {
    let secs = phase.elapsed.as_secs_f64();
    let rate = phase.appended as f64 / secs;
    let complete = phase
        .seen
        .iter()
        .filter(|s| s.in_order && s.ended_at == Some(s.last_seq))
        .count();
    ensure!(
        complete == phase.seen.len(),
        "{}: {} of {} subscribers missed, repeated or reordered entries",
        phase.name,
        phase.seen.len() - complete,
        phase.seen.len()
    );
    let mut delays: Vec<u64> = phase
        .seen
        .iter()
        .flat_map(|s| s.delays_us.iter().copied())
        .collect();
    delays.sort_unstable();
    let pct = |p: f64| -> f64 {
        if delays.is_empty() {
            return f64::NAN;
        }
        let i = ((delays.len() - 1) as f64 * p).round() as usize;
        delays[i] as f64 / 1000.0
    };
    println!(
        "{:<9} subscribers {:>5}  appended {:>7} in {:.1} s = {:>8.0} entries/s  deliveries {:>10}  complete {}/{}  delay ms: median {:.1} p99 {:.1} max {:.1} ({} samples)  cpu s: server {:.1} other {:.1}{}",
        phase.name,
        phase.seen.len(),
        phase.appended,
        secs,
        rate,
        phase.seen.iter().map(|s| s.last_seq).sum::<u64>(),
        complete,
        phase.seen.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        delays.len(),
        phase.cpu.server,
        phase.cpu.other,
        per_delivery(phase)
    );
    Ok(())
}
