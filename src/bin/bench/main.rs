//! `bench`: measures what the engine adds on top of the HTTP calls it makes.
//!
//! Starts a local target server (in this process), the orchestrator as a separate process
//! on a fresh store, runs the scenarios of BENCHMARKS.md side by side with the raw reqwest
//! ceiling, prints a table and writes JSON. `cargo run --release --bin bench -- --help`.

mod clients;
mod flow;
mod growth;
mod reads;
mod scenarios;
mod server;
mod soak;
mod stalled;
mod stored;
mod target;
mod tasks;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::{Value, json};

use scenarios::{Client, Confirm, Rate};
use server::Server;

/// mimalloc: the engine allocates many small short-lived values per step; glibc malloc
/// showed up at the top of profiles. Version 2 (the `v2` feature): under a steady load,
/// version 3 kept ~8 MiB more resident from about eleven minutes of uptime on (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks the orchestrator against the raw HTTP ceiling")]
struct Args {
    /// Repetitions of each quick scenario (medians and min–max are reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Seconds of each throughput window.
    #[arg(long, default_value_t = 6)]
    window: u64,
    /// Runs per latency measurement.
    #[arg(long, default_value_t = 100)]
    latency_runs: usize,
    /// Runs parked for approval in the parked scenario.
    #[arg(long, default_value_t = 100_000)]
    parked: usize,
    /// Log streams opened and never read in the `stalled` scenario (not run by default).
    #[arg(long, default_value_t = 300)]
    stalled: usize,
    /// Runs parked on a timer in the `waiting` scenario.
    #[arg(long, default_value_t = 10_000)]
    waiting: usize,
    /// W10 runs in the `growth` scenario, in all (driven by clients that poll each run).
    #[arg(long, default_value_t = 100_000)]
    growth_runs: usize,
    /// Batches the growth runs are measured in.
    #[arg(long, default_value_t = 5)]
    growth_batches: usize,
    /// Runs in flight in the `growth` scenario.
    #[arg(long, default_value_t = 20)]
    growth_in_flight: usize,
    /// Minutes of the `soak` scenario.
    #[arg(long, default_value_t = 30)]
    soak_minutes: u64,
    /// Runs in flight in the `soak` scenario.
    #[arg(long, default_value_t = 50)]
    soak_in_flight: usize,
    /// Finished runs in the store for the `stored` scenario's second measurement.
    #[arg(long, default_value_t = 1_000_000)]
    stored_runs: u64,
    /// Keep the `stored` scenario's seeded store (its directory is printed) to look into.
    #[arg(long)]
    stored_keep: bool,
    /// Scenarios to run (`growth`, `soak` and `stored` are not among the defaults: they
    /// take minutes).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "latency,throughput,clients,reads,fanout,scale,parked,foreach,waiting,tasks"
    )]
    scenarios: Vec<String>,
    /// Runs in flight in the `clients` scenario (one measurement per value).
    #[arg(long, value_delimiter = ',', default_value = "20,50")]
    clients_in_flight: Vec<usize>,
    /// The `clients` and `soak` scenarios' target: `nginx` (when installed) or `builtin`.
    #[arg(long, default_value = "nginx")]
    clients_target: String,
    /// A PostgreSQL DSN: measure that store instead of the embedded one. Each scenario gets
    /// a database of its own on that cluster (created, then dropped; the DSN's user needs
    /// CREATEDB), as each gets a fresh file on the embedded store.
    #[arg(long)]
    dsn: Option<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == "__serve") {
        let config = argv.next().context("__serve needs a config path")?;
        return serve(PathBuf::from(config));
    }
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == "__worker") {
        // `orchestrator worker …`, exactly as the shipped binary runs it.
        let cli = <orchestrator::cli::Cli as clap::Parser>::parse_from(
            std::iter::once(std::ffi::OsString::from("orchestrator")).chain(argv),
        );
        let Some(orchestrator::cli::Command::Client(command)) = cli.command else {
            anyhow::bail!("__worker needs a client command");
        };
        let code = orchestrator::client::main(
            &cli.client,
            command,
            <orchestrator::cli::Cli as clap::CommandFactory>::command,
        );
        return if code == std::process::ExitCode::SUCCESS {
            Ok(())
        } else {
            anyhow::bail!("the worker failed")
        };
    }
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(drive(args))
}

/// Server mode: what `orchestrator -config FILE` does (SIGTERM stops it gracefully).
fn serve(config: PathBuf) -> anyhow::Result<()> {
    let config = orchestrator::config::Config::load(&config)?;
    orchestrator::telemetry::init(&config.log);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let app = orchestrator::app::App::build(config).await?;
            // SIGTERM stops it gracefully, as it stops `main`.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            app.run(async move {
                term.recv().await;
            })
            .await?;
            anyhow::Ok(())
        })
}

/// Median, p99, min and max of a sample.
fn stats(mut xs: Vec<f64>) -> Value {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    json!({"median": at(0.5), "p99": at(0.99), "min": xs[0], "max": xs[xs.len() - 1], "n": xs.len()})
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn drive(args: Args) -> anyhow::Result<()> {
    let (target_url, target) = target::start(1)?;
    let want = |s: &str| args.scenarios.iter().any(|x| x == s);
    let mut results = serde_json::Map::new();
    let window = Duration::from_secs(args.window);
    let dsn = args.dsn.as_deref();
    results.insert(
        "store".into(),
        json!(if dsn.is_some() {
            "postgres"
        } else {
            "sqlite (synchronous=normal)"
        }),
    );

    if want("latency") {
        let server = Server::start(dsn)?;
        let client = Client::new(&server.url);
        let wf = client.create_workflow(scenarios::w10(&target_url)).await?;
        let w20 = client
            .create_workflow(scenarios::chain(&target_url, 20))
            .await?;
        scenarios::latency(&client, &target, &wf, 20, Confirm::Stream).await?; // warm-up
        scenarios::latency(&client, &target, &w20, 20, Confirm::Stream).await?;
        let (mut engine, mut raw) = (Vec::new(), Vec::new());
        let (mut engine20, mut raw20) = (Vec::new(), Vec::new());
        let mut phases = Vec::new();
        for _ in 0..args.repeat {
            let runs =
                scenarios::latency(&client, &target, &wf, args.latency_runs, Confirm::Stream)
                    .await?;
            engine.push(stats(scenarios::totals(&runs)));
            phases.extend(runs);
            raw.push(stats(
                scenarios::raw_latency(&target_url, args.latency_runs, 10).await?,
            ));
            engine20.push(stats(scenarios::totals(
                &scenarios::latency(&client, &target, &w20, args.latency_runs, Confirm::Stream)
                    .await?,
            )));
            raw20.push(stats(
                scenarios::raw_latency(&target_url, args.latency_runs, 20).await?,
            ));
        }
        let median =
            |v: &[Value], k: &str| stats(v.iter().map(|s| s[k].as_f64().unwrap_or(0.0)).collect());
        let m = |s: &Value| s["median"].as_f64().unwrap_or(0.0);
        let added = stats(
            engine
                .iter()
                .zip(&raw)
                .map(|(e, r)| (m(e) - m(r)) / 10.0)
                .collect(),
        );
        // What one more step adds, without the run's own start and end: W20 less W10, less
        // ten raw GETs, per step.
        let marginal = stats(
            (0..args.repeat)
                .map(|i| ((m(&engine20[i]) - m(&engine[i])) - (m(&raw20[i]) - m(&raw[i]))) / 10.0)
                .collect(),
        );
        println!(
            "W10 latency (ms, median over {} runs; median of {} repetitions, min–max)",
            args.latency_runs, args.repeat
        );
        row("engine median", &median(&engine, "median"), "ms");
        row("engine p99", &median(&engine, "p99"), "ms");
        row("raw median", &median(&raw, "median"), "ms");
        row("added per step", &added, "ms");
        row("W20 engine median", &median(&engine20, "median"), "ms");
        row("W20 raw median", &median(&raw20, "median"), "ms");
        row("added per extra step", &marginal, "ms");
        // Where a W10 run's time goes, as its client sees it (medians over all its runs).
        let part = |f: fn(&scenarios::Phases) -> f64| stats(phases.iter().map(f).collect());
        let (start, steps, end) = (part(|p| p.start), part(|p| p.steps), part(|p| p.confirm));
        row("W10 POST answered", &start, "ms");
        row("W10 then last step called", &steps, "ms");
        row("W10 then end event read", &end, "ms");
        // Where a step's time goes, from the server's own histograms (whole scenario).
        let commit = client
            .metric_mean_ms(
                "orchestrator_store_operation_duration_seconds",
                "operation=\"commit\"",
            )
            .await?;
        let call = client
            .metric_mean_ms("orchestrator_step_duration_seconds", "action=\"http\"")
            .await?;
        println!("  {:<28} {commit:>10.3} ms", "mean commit (store)");
        println!("  {:<28} {call:>10.3} ms", "mean http step (call)");
        results.insert(
            "w10_latency".into(),
            json!({"engine": engine, "raw": raw, "added_per_step_ms": added,
                "w20_engine": engine20, "w20_raw": raw20, "added_per_extra_step_ms": marginal,
                "w10_post_ms": start, "w10_steps_ms": steps, "w10_end_seen_ms": end,
                "mean_commit_ms": commit, "mean_http_step_ms": call}),
        );
    }

    if want("throughput") {
        let server = Server::start(dsn)?;
        let client = Client::new(&server.url);
        let wf = client.create_workflow(scenarios::w10(&target_url)).await?;
        scenarios::throughput(&server, &client, &target, &wf, 50, Duration::from_secs(1)).await?;
        let (mut engine, mut raw): (Vec<Rate>, Vec<Rate>) = (Vec::new(), Vec::new());
        for _ in 0..args.repeat {
            engine.push(scenarios::throughput(&server, &client, &target, &wf, 50, window).await?);
            raw.push(scenarios::raw(&target_url, 50, window).await?);
        }
        let ratio = stats(
            engine
                .iter()
                .zip(&raw)
                .map(|(e, r)| 100.0 * e.steps_per_s / r.steps_per_s)
                .collect(),
        );
        println!(
            "W10 throughput, 50 runs in flight ({}s windows)",
            args.window
        );
        row(
            "engine runs/s",
            &stats(engine.iter().map(|r| r.runs_per_s).collect()),
            "runs/s",
        );
        row(
            "engine steps/s",
            &stats(engine.iter().map(|r| r.steps_per_s).collect()),
            "steps/s",
        );
        row(
            "raw steps/s",
            &stats(raw.iter().map(|r| r.steps_per_s).collect()),
            "steps/s",
        );
        row("engine / raw", &ratio, "%");
        let cpu = stats(engine.iter().map(|r| r.cpu_us_per_step).collect());
        row("server CPU per step", &cpu, "µs");
        let mut section = json!({
            "engine_runs_per_s": engine.iter().map(|r| r.runs_per_s).collect::<Vec<_>>(),
            "engine_steps_per_s": engine.iter().map(|r| r.steps_per_s).collect::<Vec<_>>(),
            "raw_steps_per_s": raw.iter().map(|r| r.steps_per_s).collect::<Vec<_>>(),
            "percent_of_raw": ratio,
            "server_cpu_us_per_step": cpu,
        });
        if dsn.is_none() {
            let pages = stats(engine.iter().map(|r| r.writes.wal_pages_per_step).collect());
            let batch = stats(engine.iter().map(|r| r.writes.writes_per_commit).collect());
            row("WAL pages per step", &pages, "pages");
            row("writes per commit", &batch, "writes");
            section["wal_pages_per_step"] = pages;
            section["writes_per_commit"] = batch;
        }
        if dsn.is_some() {
            let store_cpu = stats(engine.iter().map(|r| r.store_cpu_us_per_step).collect());
            row("PostgreSQL CPU per step", &store_cpu, "µs");
            section["postgres_cpu_us_per_step"] = store_cpu;
        }
        results.insert("w10_throughput".into(), section);
    }

    if want("clients") {
        let (_nginx, url, name) = clients::Nginx::or_builtin(&args.clients_target, &target_url)?;
        println!(
            "W10 with clients that wait for their runs (target and raw ceiling: {name}; {}s windows)",
            args.window
        );
        let mut section = Vec::new();
        for &in_flight in &args.clients_in_flight {
            let server = Server::start(dsn)?;
            let client = Client::new(&server.url);
            let wf = client.create_workflow(scenarios::w10(&url)).await?;
            let poll = clients::Wait::Poll(Duration::from_millis(5));
            clients::closed_loop(
                &server,
                &client,
                &wf,
                in_flight,
                Duration::from_secs(1),
                poll,
            )
            .await?;
            let (mut polled, mut streamed, mut raw) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..args.repeat {
                polled.push(
                    clients::closed_loop(&server, &client, &wf, in_flight, window, poll).await?,
                );
                streamed.push(
                    clients::closed_loop(
                        &server,
                        &client,
                        &wf,
                        in_flight,
                        window,
                        clients::Wait::Stream,
                    )
                    .await?,
                );
                raw.push(scenarios::raw(&url, in_flight, window).await?);
            }
            let percent = |e: &[clients::Window]| {
                stats(
                    e.iter()
                        .zip(&raw)
                        .map(|(e, r)| 100.0 * e.rate.steps_per_s / r.steps_per_s)
                        .collect(),
                )
            };
            let of = |e: &[clients::Window], f: fn(&clients::Window) -> f64| {
                stats(e.iter().map(f).collect())
            };
            let raw_steps = stats(raw.iter().map(|r| r.steps_per_s).collect());
            println!("  {in_flight} runs in flight");
            row("raw steps/s", &raw_steps, "steps/s");
            let mut entry = serde_json::Map::new();
            entry.insert("in_flight".into(), json!(in_flight));
            entry.insert("raw_steps_per_s".into(), raw_steps);
            for (label, windows) in [("polling", &polled), ("streaming", &streamed)] {
                let steps = of(windows, |w| w.rate.steps_per_s);
                let share = percent(windows);
                let cpu = of(windows, |w| w.rate.cpu_us_per_step);
                let run_ms = of(windows, |w| w.run_ms);
                row(&format!("{label} steps/s"), &steps, "steps/s");
                row(&format!("{label} / raw"), &share, "%");
                row(&format!("{label} CPU per step"), &cpu, "µs");
                row(&format!("{label} run time"), &run_ms, "ms");
                let mut part = json!({"steps_per_s": steps, "percent_of_raw": share,
                    "server_cpu_us_per_step": cpu, "run_ms": run_ms});
                if dsn.is_some() {
                    let store_cpu = of(windows, |w| w.rate.store_cpu_us_per_step);
                    row(&format!("{label} PostgreSQL CPU"), &store_cpu, "µs");
                    part["postgres_cpu_us_per_step"] = store_cpu;
                }
                if label == "polling" {
                    let reads = of(windows, |w| w.polls_per_run);
                    row("polling reads per run", &reads, "");
                    part["reads_per_run"] = reads;
                }
                entry.insert(label.into(), part);
            }
            section.push(Value::Object(entry));
        }
        results.insert(
            "clients".into(),
            json!({"target": name, "by_in_flight": section}),
        );
    }

    if want("fanout") {
        let server = Server::start(dsn)?;
        let client = Client::new(&server.url);
        let wf = client
            .create_workflow(scenarios::fan_out(&target_url, 200))
            .await?;
        scenarios::latency(&client, &target, &wf, 1, Confirm::Poll).await?;
        let times =
            scenarios::latency(&client, &target, &wf, args.repeat.max(3), Confirm::Poll).await?;
        println!("Fan-out: 1 → 200 parallel GETs → join");
        let s = stats(scenarios::totals(&times));
        row("time to completion", &s, "ms");
        // The finished run's log read over SSE, as a client opening it afterwards would.
        let run = &times.last().context("a fan-out run")?.run;
        let mut replays = Vec::new();
        for _ in 0..args.repeat.max(3) {
            let started = Instant::now();
            client.stream_terminal(run).await?;
            replays.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let entries = client.log_len(run).await?;
        let replay = stats(replays);
        row(&format!("log stream of {entries} entries"), &replay, "ms");
        results.insert(
            "fan_out_200".into(),
            json!({"completion_ms": s, "log_replay_ms": replay, "log_entries": entries}),
        );
    }

    if want("scale") {
        println!("Scale curve: W10 throughput and server RSS by runs in flight");
        let mut curve = Vec::new();
        for in_flight in [1usize, 10, 50, 200] {
            let server = Server::start(dsn)?;
            let client = Client::new(&server.url);
            let wf = client.create_workflow(scenarios::w10(&target_url)).await?;
            let mut rates = Vec::new();
            for _ in 0..args.repeat {
                rates.push(
                    scenarios::throughput(&server, &client, &target, &wf, in_flight, window / 2)
                        .await?,
                );
            }
            let runs = stats(rates.iter().map(|r| r.runs_per_s).collect());
            let rss = stats(rates.iter().map(|r| mib(r.peak_rss)).collect());
            row(&format!("{in_flight:>3} in flight runs/s"), &runs, "runs/s");
            row(&format!("{in_flight:>3} in flight peak RSS"), &rss, "MiB");
            curve.push(json!({"in_flight": in_flight, "runs_per_s": runs, "peak_rss_mib": rss}));
        }
        results.insert("scale".into(), json!(curve));
    }

    if want("reads") {
        let server = Server::start(dsn)?;
        let client = Client::new(&server.url);
        let w10 = client.create_workflow(scenarios::w10(&target_url)).await?;
        for _ in 0..20 {
            client.run_to_end(&target, &w10, Confirm::Poll).await?;
        }
        let wf = client.create_workflow(reads::r10(&target_url)).await?;
        let run = reads::held_run(&client, &wf).await?;
        let one = format!("/v1/runs/{run}");
        let list = "/v1/runs?limit=20";
        let summaries = "/v1/runs?limit=20&view=summary";
        const READERS: usize = 4;
        let measure = async |path: &str| -> anyhow::Result<Vec<reads::Reads>> {
            reads::hammer(&server, &client, path, READERS, Duration::from_secs(1)).await?;
            let mut windows = Vec::new();
            for _ in 0..args.repeat {
                windows.push(reads::hammer(&server, &client, path, READERS, window).await?);
            }
            Ok(windows)
        };
        let running = measure(&one).await?;
        reads::finish(&client, &target, &run).await?;
        let finished = measure(&one).await?;
        let listed = measure(list).await?;
        let summarised = measure(summaries).await?;
        println!(
            "Reads of a 10-step run, {READERS} clients reading back to back ({}s windows)",
            args.window
        );
        let mut section = serde_json::Map::new();
        for (label, windows) in [
            ("running here", &running),
            ("finished", &finished),
            ("list of 20", &listed),
            ("list of 20, summary", &summarised),
        ] {
            let per_s = stats(windows.iter().map(|w| w.reads_per_s).collect());
            let cpu = stats(windows.iter().map(|w| w.cpu_us_per_read).collect());
            row(&format!("{label}: reads/s"), &per_s, "reads/s");
            row(&format!("{label}: CPU per read"), &cpu, "µs");
            let bytes = windows.first().map_or(0, |w| w.bytes);
            println!("  {:<28} {bytes:>10} bytes", format!("{label}: body"));
            section.insert(
                label.into(),
                json!({"reads_per_s": per_s, "server_cpu_us_per_read": cpu, "body_bytes": bytes}),
            );
        }
        results.insert("reads".into(), Value::Object(section));
    }

    if want("parked") {
        let server = Server::start(dsn)?;
        let client = Client::new(&server.url);
        let p = scenarios::parked(&server, &client, &target, &target_url, args.parked).await?;
        println!("Parked runs: {} waiting for approval", p.runs);
        println!("  {:<28} {:>10.1} MiB", "RSS before", mib(p.rss_before));
        println!(
            "  {:<28} {:>10.1} MiB",
            "RSS with all parked",
            mib(p.rss_parked)
        );
        println!(
            "  {:<28} {:>10.1} MiB",
            "added",
            mib(p.rss_parked.saturating_sub(p.rss_before))
        );
        println!(
            "  {:<28} {:>10.1} s",
            "time to start and park all", p.park_s
        );
        println!("  {:<28} {:>10.1} s", "time to approve all", p.approve_s);
        results.insert("parked".into(), json!({
            "runs": p.runs, "rss_before_mib": mib(p.rss_before), "rss_parked_mib": mib(p.rss_parked),
            "added_mib": mib(p.rss_parked.saturating_sub(p.rss_before)), "park_s": p.park_s, "approve_s": p.approve_s,
        }));
    }

    if want("stalled") {
        let server = Server::start(dsn)?;
        let client = Client::new(&server.url);
        let s = stalled::stalled(&server, &client, args.stalled, 6).await?;
        println!(
            "Stalled readers: {} log streams never read, on a run of {} entries (8 KB lines)",
            s.streams, s.entries
        );
        let added = s.rss_held.saturating_sub(s.rss_before);
        println!("  {:<28} {:>10.1} MiB", "RSS before", mib(s.rss_before));
        println!(
            "  {:<28} {:>10.1} MiB",
            "RSS with streams open",
            mib(s.rss_held)
        );
        println!(
            "  {:<28} {:>10.1} KiB",
            "added per stream",
            added as f64 / 1024.0 / s.streams.max(1) as f64
        );
        println!(
            "  {:<28} {:>10.1} MiB",
            "RSS after closing",
            mib(s.rss_closed)
        );
        results.insert(
            "stalled".into(),
            json!({
                "streams": s.streams, "entries": s.entries, "rss_before_mib": mib(s.rss_before),
                "rss_held_mib": mib(s.rss_held), "rss_closed_mib": mib(s.rss_closed),
            }),
        );
    }

    if want("foreach") {
        let server = Server::start(dsn)?;
        let client = Client::new(&server.url);
        flow::foreach(&server, &client, &target_url, 100, 50).await?; // warm-up
        let mut runs = Vec::new();
        for _ in 0..args.repeat {
            runs.push(flow::foreach(&server, &client, &target_url, 1000, 50).await?);
        }
        println!("foreach: 1,000 http GET items, concurrency 50, one run");
        let time = stats(runs.iter().map(|r| r.seconds * 1000.0).collect());
        let commits = stats(runs.iter().map(|r| r.commits).collect());
        let cpu = stats(runs.iter().map(|r| r.cpu_us_per_item).collect());
        row("time to completion", &time, "ms");
        row("commits", &commits, "");
        row("server CPU per item", &cpu, "µs");
        results.insert(
            "foreach_1000".into(),
            json!({"time_ms": time, "commits": commits, "server_cpu_us_per_item": cpu}),
        );
    }

    if want("waiting") {
        let server = Server::start(dsn)?;
        let client = Client::new(&server.url);
        let w = flow::waiting(&server, &client, args.waiting).await?;
        let added = mib(w.rss_waiting.saturating_sub(w.rss_before));
        println!("Waiting runs: {} parked on a one-hour timer", w.runs);
        println!("  {:<28} {:>10.1} MiB", "RSS before", mib(w.rss_before));
        println!(
            "  {:<28} {:>10.1} MiB",
            "RSS with all waiting",
            mib(w.rss_waiting)
        );
        println!("  {:<28} {:>10.1} MiB", "added", added);
        println!(
            "  {:<28} {:>10.1} s",
            "time to start and park all", w.park_s
        );
        results.insert(
            "waiting".into(),
            json!({"runs": w.runs, "rss_before_mib": mib(w.rss_before),
                "rss_waiting_mib": mib(w.rss_waiting), "added_mib": added, "park_s": w.park_s}),
        );
    }

    if want("growth") {
        let mut server = Server::start(dsn)?;
        let client = Client::new(&server.url);
        let wf = client.create_workflow(scenarios::w10(&target_url)).await?;
        let batches = args.growth_batches.max(1);
        let per_batch = (args.growth_runs / batches).max(1);
        println!(
            "Growth: {} W10 runs in {batches} batches, {} in flight, each client reading its run every 5 ms until it ends",
            per_batch * batches,
            args.growth_in_flight
        );
        println!(
            "  {:>9} {:>9} {:>12} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7}",
            "runs",
            "runs/s",
            "CPU/step µs",
            "db MiB",
            "WAL MiB",
            "WAL peak",
            "bytes/run",
            "RSS MiB",
            "polls"
        );
        let measured = growth::growth(
            &server,
            &client,
            &wf,
            batches,
            per_batch,
            args.growth_in_flight,
            Duration::from_millis(5),
        )
        .await?;
        let mut rows = Vec::new();
        for b in &measured {
            let per_run = (b.db_bytes + b.wal_bytes) as f64 / b.runs_done as f64;
            println!(
                "  {:>9} {:>9.0} {:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>10.0} {:>9.1} {:>7.1}",
                b.runs_done,
                b.runs_per_s,
                b.cpu_us_per_step,
                mib(b.db_bytes),
                mib(b.wal_bytes),
                mib(b.wal_peak),
                per_run,
                mib(b.rss),
                b.polls_per_run
            );
            rows.push(json!({"runs": b.runs_done, "runs_per_s": b.runs_per_s,
                "server_cpu_us_per_step": b.cpu_us_per_step, "db_mib": mib(b.db_bytes),
                "wal_mib": mib(b.wal_bytes), "wal_peak_mib": mib(b.wal_peak),
                "bytes_per_run": per_run, "rss_mib": mib(b.rss), "polls_per_run": b.polls_per_run}));
        }
        let stopped = Instant::now();
        let status = server.stop()?;
        let (db, wal) = server.store_bytes();
        println!(
            "  after SIGTERM ({status}, {:.1} s): db {:.1} MiB, WAL {:.1} MiB",
            stopped.elapsed().as_secs_f64(),
            mib(db),
            mib(wal)
        );
        results.insert(
            "growth".into(),
            json!({"batches": rows, "after_stop": {"db_mib": mib(db), "wal_mib": mib(wal)}}),
        );
    }

    if want("soak") {
        let (_nginx, url, name) = clients::Nginx::or_builtin(&args.clients_target, &target_url)?;
        let mut server = Server::start(dsn)?;
        let client = Client::new(&server.url);
        let wf = client.create_workflow(scenarios::w10(&url)).await?;
        println!(
            "Soak: W10 for {} minutes, {} in flight, each client reading its run every 5 ms until it ends (target: {name})",
            args.soak_minutes, args.soak_in_flight
        );
        println!(
            "  {:>6} {:>9} {:>12} {:>10} {:>10} {:>9} {:>10}",
            "minute", "runs/s", "CPU/step µs", "db MiB", "WAL peak", "RSS MiB", "runs"
        );
        let samples = soak::soak(
            &server,
            &client,
            &wf,
            args.soak_in_flight,
            Duration::from_secs(args.soak_minutes * 60),
            Duration::from_secs(60),
            Duration::from_millis(5),
        )
        .await?;
        let stopped = Instant::now();
        let status = server.stop()?;
        let (db, wal) = server.store_bytes();
        println!(
            "  after SIGTERM ({status}, {:.1} s): db {:.1} MiB, WAL {:.1} MiB",
            stopped.elapsed().as_secs_f64(),
            mib(db),
            mib(wal)
        );
        let mut section = json!({
            "minutes": samples.iter().map(|s| json!({"minute": s.minute, "runs_per_s": s.runs_per_s,
                "server_cpu_us_per_step": s.cpu_us_per_step, "db_mib": mib(s.db_bytes),
                "wal_peak_mib": mib(s.wal_peak), "rss_mib": mib(s.rss), "runs": s.runs_done})).collect::<Vec<_>>(),
            "after_stop": {"db_mib": mib(db), "wal_mib": mib(wal)},
        });
        if let Some(d) = soak::drift(&samples, 5) {
            let w = d.window;
            let change = 100.0 * (d.last_runs_per_s / d.first_runs_per_s - 1.0);
            let spread = 100.0 * (d.rss_max as f64 / d.rss_min.max(1) as f64 - 1.0);
            println!(
                "  runs/s first {w} min {:.0}, last {w} min {:.0} ({change:+.1} %); RSS after minute 1 {:.1}–{:.1} MiB ({spread:.1} % spread); WAL peak {:.1} MiB",
                d.first_runs_per_s,
                d.last_runs_per_s,
                mib(d.rss_min),
                mib(d.rss_max),
                mib(d.wal_peak)
            );
            section["drift"] = json!({"window_minutes": w, "first_runs_per_s": d.first_runs_per_s,
                "last_runs_per_s": d.last_runs_per_s, "change_percent": change,
                "rss_min_mib": mib(d.rss_min), "rss_max_mib": mib(d.rss_max),
                "rss_spread_percent": spread, "wal_peak_mib": mib(d.wal_peak)});
        }
        results.insert("soak".into(), section);
    }

    if want("stored") {
        if dsn.is_some() {
            anyhow::bail!("the stored scenario seeds the embedded store; leave out --dsn");
        }
        println!(
            "W10 on a fresh store and on one holding {} finished runs, windows alternating ({} in flight, {}s windows)",
            args.stored_runs,
            stored::IN_FLIGHT,
            args.window
        );
        // The runs to copy: what W10 windows on a fresh store leave.
        let mut seeded_server = Server::start(None)?;
        let client = Client::new(&seeded_server.url);
        let wf = client.create_workflow(scenarios::w10(&target_url)).await?;
        stored::warm_up(&seeded_server, &target, &wf).await?;
        let mut first = stored::Measured::default();
        for _ in 0..args.repeat {
            stored::measure(&seeded_server, &target, &wf, window, &mut first).await?;
        }
        let first_db = seeded_server.store_bytes().0;
        seeded_server.stop()?;
        let seeded = stored::seed(&seeded_server.database(), args.stored_runs)?;
        println!(
            "  seeded to {} finished runs in {:.0} s",
            seeded.runs, seeded.seconds
        );
        let reopened = Instant::now();
        seeded_server.restart()?;
        let reopen_s = reopened.elapsed().as_secs_f64();
        println!("  restart on the seeded store: listening after {reopen_s:.1} s");
        stored::check_a_copy(&Client::new(&seeded_server.url)).await?;
        // The machine drifts by more than the effect sought: windows on a fresh store and
        // on the seeded one alternate, each server idle while the other is measured.
        let fresh_server = Server::start(None)?;
        let fresh_wf = Client::new(&fresh_server.url)
            .create_workflow(scenarios::w10(&target_url))
            .await?;
        stored::warm_up(&fresh_server, &target, &fresh_wf).await?;
        stored::warm_up(&seeded_server, &target, &wf).await?;
        let (mut fresh, mut many) = (stored::Measured::default(), stored::Measured::default());
        for round in 0..args.repeat {
            stored::measure(&fresh_server, &target, &fresh_wf, window, &mut fresh).await?;
            stored::measure(&seeded_server, &target, &wf, window, &mut many).await?;
            println!(
                "  round {}: steps/s fresh {:.0}, seeded {:.0}; polling fresh {:.0}, seeded {:.0}",
                round + 1,
                fresh.throughput[round].steps_per_s,
                many.throughput[round].steps_per_s,
                fresh.polling[round].rate.steps_per_s,
                many.polling[round].rate.steps_per_s
            );
        }
        let phases = [
            ("fresh store, before seeding", first_db, &first),
            ("fresh store", fresh_server.store_bytes().0, &fresh),
            ("seeded store", seeded_server.store_bytes().0, &many),
        ];
        let mut section = Vec::new();
        for (label, db, m) in phases {
            println!("  {label} (database {:.0} MiB)", mib(db));
            let throughput = stats(m.throughput.iter().map(|r| r.steps_per_s).collect());
            let throughput_cpu = stats(m.throughput.iter().map(|r| r.cpu_us_per_step).collect());
            let polling = stats(m.polling.iter().map(|w| w.rate.steps_per_s).collect());
            let polling_cpu = stats(m.polling.iter().map(|w| w.rate.cpu_us_per_step).collect());
            row("steps/s", &throughput, "steps/s");
            row("server CPU per step", &throughput_cpu, "µs");
            row("polling steps/s", &polling, "steps/s");
            row("polling CPU per step", &polling_cpu, "µs");
            section.push(json!({"phase": label, "database_mib": mib(db),
                "steps_per_s": throughput, "server_cpu_us_per_step": throughput_cpu,
                "polling_steps_per_s": polling, "polling_server_cpu_us_per_step": polling_cpu}));
        }
        // Each seeded window against the fresh window just before it.
        let paired = |f: &dyn Fn(&stored::Measured) -> Vec<f64>| {
            stats(
                f(&many)
                    .iter()
                    .zip(f(&fresh))
                    .map(|(m, f)| 100.0 * (m / f - 1.0))
                    .collect(),
            )
        };
        let steps_change = paired(&|m| m.throughput.iter().map(|r| r.steps_per_s).collect());
        let polling_change = paired(&|m| m.polling.iter().map(|w| w.rate.steps_per_s).collect());
        println!("  seeded against fresh, window by window");
        row("steps/s change", &steps_change, "%");
        row("polling steps/s change", &polling_change, "%");
        let windows = |m: &stored::Measured| {
            json!({"steps_per_s": m.throughput.iter().map(|r| r.steps_per_s).collect::<Vec<_>>(),
                "polling_steps_per_s": m.polling.iter().map(|w| w.rate.steps_per_s).collect::<Vec<_>>()})
        };
        let rounds = json!({"fresh": windows(&fresh), "seeded": windows(&many)});
        if args.stored_keep {
            seeded_server.stop()?;
            println!("  seeded store kept in {}", seeded_server.keep().display());
        }
        results.insert(
            "stored".into(),
            json!({"rounds": rounds, "finished_runs": seeded.runs, "seed_seconds": seeded.seconds,
                "restart_seconds": reopen_s, "phases": section,
                "steps_change_percent": steps_change,
                "polling_steps_change_percent": polling_change}),
        );
    }

    if want("tasks") {
        let server = Server::start(dsn)?;
        let client = Client::new(&server.url);
        let t2 = client.create_workflow(tasks::t2(&target_url)).await?;
        let h2 = client.create_workflow(tasks::h2(&target_url)).await?;
        println!("Task queues: T2 (task step + http step) beside H2 (two http steps)");
        let mut section = serde_json::Map::new();
        {
            let one = tasks::FastWorkers::start(&client, 1, 1);
            tasks::settle().await;
            scenarios::latency(&client, &target, &t2, 20, Confirm::Stream).await?;
            one.wake_ms.lock().await.clear();
            let (mut task, mut http) = (Vec::new(), Vec::new());
            for _ in 0..args.repeat {
                task.push(stats(scenarios::totals(
                    &scenarios::latency(&client, &target, &t2, args.latency_runs, Confirm::Stream)
                        .await?,
                )));
                http.push(stats(scenarios::totals(
                    &scenarios::latency(&client, &target, &h2, args.latency_runs, Confirm::Stream)
                        .await?,
                )));
            }
            let wake = stats(one.wake_ms.lock().await.clone());
            one.stop().await?;
            let median = |v: &[Value], k: &str| {
                stats(v.iter().map(|s| s[k].as_f64().unwrap_or(0.0)).collect())
            };
            row("T2 round trip median", &median(&task, "median"), "ms");
            row("T2 round trip p99", &median(&task, "p99"), "ms");
            row("H2 median", &median(&http, "median"), "ms");
            row("H2 p99", &median(&http, "p99"), "ms");
            row("enqueue → parked poll", &wake, "ms");
            section.insert(
                "round_trip".into(),
                json!({"task": task, "http": http, "enqueue_to_poll_ms": wake}),
            );
        }
        for (label, shell) in [
            ("in-harness workers", false),
            ("orchestrator worker --exec cat", true),
        ] {
            let fast;
            let _shell;
            if shell {
                _shell = Some(tasks::ShellWorkers::start(&server.url, 4, 16)?);
                fast = None;
            } else {
                _shell = None;
                fast = Some(tasks::FastWorkers::start(&client, 4, 16));
            }
            tasks::settle().await;
            scenarios::throughput(&server, &client, &target, &t2, 50, Duration::from_secs(1))
                .await?;
            let mut rates = Vec::new();
            for _ in 0..args.repeat {
                rates
                    .push(scenarios::throughput(&server, &client, &target, &t2, 50, window).await?);
            }
            if let Some(fast) = fast {
                fast.stop().await?;
            }
            let s = stats(rates.iter().map(|r| r.runs_per_s).collect());
            let cpu = stats(rates.iter().map(|r| r.cpu_us_per_step / 2.0).collect());
            row(&format!("tasks/s, {label}"), &s, "tasks/s");
            row("  server CPU per step", &cpu, "µs");
            section.insert(
                format!("throughput {label}"),
                json!({"tasks_per_s": s, "server_cpu_us_per_step": cpu}),
            );
        }
        let mut rates = Vec::new();
        for _ in 0..args.repeat {
            rates.push(scenarios::throughput(&server, &client, &target, &h2, 50, window).await?);
        }
        let s = stats(rates.iter().map(|r| r.runs_per_s).collect());
        row("H2 runs/s, 50 in flight", &s, "runs/s");
        section.insert("throughput http".into(), json!({"runs_per_s": s}));
        results.insert("tasks".into(), Value::Object(section));
    }

    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&Value::Object(results))?,
    )?;
    println!("results written to {}", args.out.display());
    Ok(())
}

fn row(name: &str, s: &Value, unit: &str) {
    let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "  {name:<28} {:>10.3} {unit:<8} ({:.3}–{:.3})",
        f("median"),
        f("min"),
        f("max")
    );
}
