//! The benchmark scenarios. Each returns plain numbers; `main` repeats and reports them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::server::Server;
use crate::target::Target;

/// Talks to the server under test.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

static TAGS: AtomicU64 = AtomicU64::new(0);

/// A unique tag for a run, known before the run is started.
fn tag() -> String {
    format!("t{}", TAGS.fetch_add(1, Ordering::Relaxed))
}

impl Client {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            // Below the server's keep-alive (75 s): never reuse a connection it is closing.
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.to_owned(),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("POST {path}: {status}: {body}");
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await?
            .json()
            .await?)
    }

    /// How many entries the log of `run` holds.
    pub async fn log_len(&self, run: &str) -> anyhow::Result<usize> {
        let (mut after, mut entries) = (0, 0);
        loop {
            let page = self
                .get(&format!("/v1/runs/{run}/logs?after={after}&limit=10000"))
                .await?;
            entries += page["items"]
                .as_array()
                .map(Vec::len)
                .context("a page of log entries")?;
            match page["next_after"].as_u64() {
                Some(next) => after = next,
                None => return Ok(entries),
            }
        }
    }

    /// `POST`s `text` as `text/plain`; it must answer 2xx.
    pub async fn post_text(&self, path: &str, text: String) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "text/plain")
            .body(text)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            bail!("POST {path}: {status}: {}", response.text().await?);
        }
        Ok(())
    }

    /// The body of a `GET` that must answer 200, unparsed; returns its length.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<usize> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body.len())
    }

    /// The mean of histogram `name` for the series whose labels include `label`, from
    /// the server's `/metrics`, in milliseconds.
    pub async fn metric_mean_ms(&self, name: &str, label: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        let value = |suffix: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}_{suffix}{{")) && l.contains(label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        Ok(1000.0 * value("sum") / value("count").max(1.0))
    }

    /// The sum of the series of `name` whose labels include `label`, from `/metrics`.
    pub async fn metric_sum(&self, name: &str, label: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
                    && l.contains(label)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    pub async fn create_workflow(&self, definition: Value) -> anyhow::Result<String> {
        let body = self.post("/v1/workflows", &definition).await?;
        body["id"]
            .as_str()
            .map(str::to_owned)
            .context("workflow id")
    }

    pub async fn start(&self, workflow: &str, tag: &str) -> anyhow::Result<String> {
        let body = self
            .post(
                "/v1/runs",
                &json!({"workflow_id": workflow, "context": {"tag": tag}}),
            )
            .await?;
        body["id"].as_str().map(str::to_owned).context("run id")
    }

    /// Reads the run every millisecond (tokio's timer granularity) until it is over.
    async fn poll_terminal(&self, run: &str) -> anyhow::Result<()> {
        self.poll_every(run, Duration::from_millis(1))
            .await
            .map(drop)
    }

    /// Reads the run every `every` until it is over; returns how many reads it took.
    pub async fn poll_every(&self, run: &str, every: Duration) -> anyhow::Result<u64> {
        let mut reads = 0;
        loop {
            let body = self.get(&format!("/v1/runs/{run}")).await?;
            reads += 1;
            match body["status"].as_str() {
                Some("SUCCEEDED") => return Ok(reads),
                Some("FAILED" | "CANCELED") => {
                    bail!("run {run} ended {}: {}", body["status"], body["error"])
                }
                _ => tokio::time::sleep(every).await,
            }
        }
    }

    /// Follows the run's log stream until its `end` event (sent once the run's final
    /// state is committed), as a client waiting for a run would; no polling interval
    /// adds to what is measured.
    pub async fn stream_terminal(&self, run: &str) -> anyhow::Result<()> {
        use futures::StreamExt;
        let response = self
            .http
            .get(format!("{}/v1/runs/{run}/logs/stream", self.base))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("run {run}: log stream answered {}", response.status());
        }
        let mut body = response.bytes_stream();
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk?));
            // `event: end` then `data: {"run_status": …}` and a blank line.
            if let Some(at) = text.find("event: end")
                && text[at..].contains("\n\n")
            {
                let end = &text[at..];
                if end.contains("\"SUCCEEDED\"") {
                    return Ok(());
                }
                bail!("run {run} did not succeed: {end}");
            }
        }
        bail!("run {run}: the log stream closed before its end event")
    }

    /// Starts a run of `workflow` and waits until its last step called the target and,
    /// as `confirm` says, until the run is seen `SUCCEEDED`; returns how long each part took.
    pub async fn run_to_end(
        &self,
        target: &Target,
        workflow: &str,
        confirm: Confirm,
    ) -> anyhow::Result<Phases> {
        let tag = tag();
        let done = target.expect_done(&tag);
        let started = Instant::now();
        let run = self.start(workflow, &tag).await?;
        let answered = Instant::now();
        tokio::time::timeout(Duration::from_secs(60), done)
            .await
            .with_context(|| format!("run {run} did not reach its last step"))??;
        let last_call = Instant::now();
        match confirm {
            Confirm::No => {}
            Confirm::Poll => self.poll_terminal(&run).await?,
            Confirm::Stream => self.stream_terminal(&run).await?,
        }
        let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1000.0;
        let seen = Instant::now();
        Ok(Phases {
            run,
            total: ms(started, seen),
            start: ms(started, answered),
            steps: ms(answered, last_call),
            confirm: ms(last_call, seen),
        })
    }
}

/// Where one run's time went, in milliseconds.
#[derive(Debug, Clone)]
pub struct Phases {
    pub run: String,
    pub total: f64,
    /// The `POST /v1/runs` until its answer.
    pub start: f64,
    /// From the answer until the last step's call reached the target.
    pub steps: f64,
    /// From there until the client saw the run over.
    pub confirm: f64,
}

/// How a measurement learns that a run is over, after its last step called the target.
#[derive(Debug, Clone, Copy)]
pub enum Confirm {
    /// It does not wait (throughput: the next run starts).
    No,
    /// It reads the run every millisecond: for runs with long logs (fan-out), whose
    /// stream would replay hundreds of entries.
    Poll,
    /// It follows the run's log stream to its `end` event: for short runs (W10), where a
    /// millisecond of polling granularity would be a fifth of the run.
    Stream,
}

/// W10: ten sequential GETs; the last one reports the run's tag.
pub fn w10(target: &str) -> Value {
    chain(target, 10)
}

/// `n` sequential GETs (named `w{n}`); the last one reports the run's tag.
pub fn chain(target: &str, n: usize) -> Value {
    let mut steps: Vec<Value> = (1..n)
        .map(|i| json!({"name": format!("s{i}"), "action": "http", "input": {"method": "GET", "url": format!("{target}/ok")}}))
        .collect();
    steps.push(json!({"name": format!("s{n}"), "action": "http", "input": {"method": "GET", "url": format!("{target}/ok?done={{{{ context.tag }}}}")}}));
    json!({"name": format!("w{n}"), "steps": steps})
}

/// One step fanning out to `width` parallel GETs and a join.
pub fn fan_out(target: &str, width: usize) -> Value {
    let mut steps = vec![json!({"name": "root", "action": "transform", "input": {"value": 1}})];
    let names: Vec<String> = (0..width).map(|i| format!("b{i}")).collect();
    for name in &names {
        steps.push(json!({"name": name, "action": "http", "depends_on": ["root"], "input": {"method": "GET", "url": format!("{target}/ok")}}));
    }
    steps.push(
        json!({"name": "join", "action": "http", "depends_on": names,
        "input": {"method": "GET", "url": format!("{target}/ok?done={{{{ context.tag }}}}")}}),
    );
    json!({"name": "fan-out", "steps": steps})
}

/// The whole time of each run, in milliseconds.
pub fn totals(runs: &[Phases]) -> Vec<f64> {
    runs.iter().map(|p| p.total).collect()
}

/// Where the time of each run went, one run at a time.
pub async fn latency(
    client: &Client,
    target: &Target,
    workflow: &str,
    runs: usize,
    confirm: Confirm,
) -> anyhow::Result<Vec<Phases>> {
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        out.push(client.run_to_end(target, workflow, confirm).await?);
    }
    Ok(out)
}

/// Throughput of one measurement window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    pub runs_per_s: f64,
    pub steps_per_s: f64,
    pub peak_rss: u64,
    /// Server CPU time (user + system) per step, in microseconds.
    pub cpu_us_per_step: f64,
    /// CPU time of the PostgreSQL server's processes per step, in microseconds (zero on
    /// the embedded store, whose work is in the server's own).
    pub store_cpu_us_per_step: f64,
    /// The store's writes: WAL pages per step and writes per commit (zero where the store
    /// does not count them).
    pub writes: Writes,
}

/// What the embedded store wrote in a window, from its `/metrics` counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Writes {
    pub wal_pages_per_step: f64,
    pub writes_per_commit: f64,
}

/// The store's write counters (`commits`, `writes`, `wal_pages`) as `/metrics` has them now.
async fn write_counts(client: &Client) -> anyhow::Result<[f64; 3]> {
    Ok([
        client
            .metric_sum("orchestrator_store_commits_total", "")
            .await?,
        client
            .metric_sum("orchestrator_store_writes_total", "")
            .await?,
        client
            .metric_sum("orchestrator_store_wal_pages_total", "")
            .await?,
    ])
}

impl Writes {
    /// From the counters before and after a window of `steps` steps.
    fn between(before: [f64; 3], after: [f64; 3], steps: f64) -> Self {
        let [commits, writes, pages] = [0, 1, 2].map(|i| after[i] - before[i]);
        Self {
            wal_pages_per_step: pages / steps.max(1.0),
            writes_per_commit: writes / commits.max(1.0),
        }
    }
}

/// Runs per second with `in_flight` runs at all times, for `window`.
pub async fn throughput(
    server: &Server,
    client: &Client,
    target: &Arc<Target>,
    workflow: &str,
    in_flight: usize,
    window: Duration,
) -> anyhow::Result<Rate> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let calls_before = target.calls();
    let cpu_before = server.cpu_seconds();
    let store_cpu_before = server.store_cpu_seconds();
    let writes_before = write_counts(client).await?;
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (client, target, workflow, done) = (
                client.clone(),
                target.clone(),
                workflow.to_owned(),
                done.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    client.run_to_end(&target, &workflow, Confirm::No).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let mut peak_rss = 0;
    while workers.iter().any(|w| !w.is_finished()) {
        peak_rss = peak_rss.max(server.rss());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in workers {
        w.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let steps = (target.calls() - calls_before) as f64;
    let cpu_after = server.cpu_seconds();
    let store_cpu_after = server.store_cpu_seconds();
    let writes = Writes::between(writes_before, write_counts(client).await?, steps);
    Ok(Rate {
        runs_per_s: done.load(Ordering::Relaxed) as f64 / secs,
        steps_per_s: steps / secs,
        peak_rss,
        cpu_us_per_step: (cpu_after - cpu_before) * 1e6 / steps.max(1.0),
        store_cpu_us_per_step: (store_cpu_after - store_cpu_before) * 1e6 / steps.max(1.0),
        writes,
    })
}

/// The same ten GETs done directly by a tight reqwest loop, `in_flight` at a time.
pub async fn raw(target_url: &str, in_flight: usize, window: Duration) -> anyhow::Result<Rate> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?;
    let deadline = Instant::now() + window;
    let rounds = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (http, url, rounds) = (http.clone(), format!("{target_url}/ok"), rounds.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    for _ in 0..10 {
                        let body: Value = http.get(&url).send().await?.json().await?;
                        std::hint::black_box(body);
                    }
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let runs = rounds.load(Ordering::Relaxed) as f64 / secs;
    Ok(Rate {
        runs_per_s: runs,
        steps_per_s: runs * 10.0,
        ..Rate::default()
    })
}

/// Milliseconds per raw round of `gets` sequential GETs, one at a time.
pub async fn raw_latency(target_url: &str, rounds: usize, gets: usize) -> anyhow::Result<Vec<f64>> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let url = format!("{target_url}/ok");
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..gets {
            let body: Value = http.get(&url).send().await?.json().await?;
            std::hint::black_box(body);
        }
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// The parked-runs scenario's measurements.
#[derive(Debug, Clone, Copy)]
pub struct Parked {
    pub runs: usize,
    pub rss_before: u64,
    pub rss_parked: u64,
    pub park_s: f64,
    pub approve_s: f64,
}

/// Parks `runs` runs waiting for approval, measures memory, then approves them all.
pub async fn parked(
    server: &Server,
    client: &Client,
    target: &Arc<Target>,
    target_url: &str,
    runs: usize,
) -> anyhow::Result<Parked> {
    let workflow = client
        .create_workflow(json!({"name": "parked", "steps": [
            {"name": "gate", "action": "transform", "requires_approval": true, "input": {"value": 1}},
            {"name": "after", "action": "http", "input": {"method": "GET", "url": format!("{target_url}/ok")}}
        ]}))
        .await?;
    let rss_before = server.rss();
    let started = Instant::now();
    let ids = for_each_concurrently(runs, 64, {
        let (client, workflow) = (client.clone(), workflow.clone());
        move |_| {
            let (client, workflow) = (client.clone(), workflow.clone());
            async move { client.start(&workflow, "parked").await }
        }
    })
    .await?;
    while !client.get("/v1/runs?status=PENDING&limit=1").await?["items"]
        .as_array()
        .is_none_or(Vec::is_empty)
        || !client.get("/v1/runs?status=RUNNING&limit=1").await?["items"]
            .as_array()
            .is_none_or(Vec::is_empty)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let park_s = started.elapsed().as_secs_f64();
    let rss_parked = server.rss();
    let calls_before = target.calls();
    let started = Instant::now();
    let ids = Arc::new(ids);
    for_each_concurrently(runs, 64, {
        let (client, ids) = (client.clone(), ids.clone());
        move |i| {
            let (client, ids) = (client.clone(), ids.clone());
            async move {
                client
                    .post(&format!("/v1/runs/{}/approve", ids[i]), &json!({}))
                    .await
                    .map(|_| ())
            }
        }
    })
    .await?;
    while target.calls() - calls_before < runs as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Parked {
        runs,
        rss_before,
        rss_parked,
        park_s,
        approve_s: started.elapsed().as_secs_f64(),
    })
}

/// Runs `job(i)` for `i` in `0..n`, at most `width` at a time, collecting results in order.
pub async fn for_each_concurrently<T, F, Fut>(
    n: usize,
    width: usize,
    job: F,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    use futures::StreamExt;
    let results: Vec<anyhow::Result<T>> = futures::stream::iter(0..n)
        .map(job)
        .buffered(width)
        .collect()
        .await;
    results.into_iter().collect()
}
