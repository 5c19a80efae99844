//! Prometheus metrics, all named `orchestrator_…`, served by `GET /metrics`.
//!
//! Each [`Metrics`] owns its own registry (no process-global state, so several servers in
//! one process, as in the tests, count separately). Counters and histograms are recorded
//! where things happen; the engine records only after a commit, so what is counted has
//! happened. Values that are states rather than events (active and parked runs, open SSE
//! streams, hook outbox depth) are read when scraped, through [`Gauges`].
//!
//! Recording is cheap: atomic adds on label children the crate looks up under a read
//! lock; the hot per-step and per-store-call paths use children resolved ahead of time.
//!
//! Series whose labels are known in advance (final statuses, actions, hook targets) exist
//! at zero from the first scrape, so a dashboard or an alert never sees them appear from
//! nothing; only request latencies (by route and status) and AI tokens (by workflow and
//! model) appear with their first sample. The process
//! metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, …) keep their standard unprefixed names on Linux, so the usual
//! dashboards find them.

use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::{RunStatus, StepStatus, WriteStats};

/// The media type of `GET /metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets for step, request and store latencies: 0.5 ms to ~65 s, doubling.
fn latency_buckets() -> Vec<f64> {
    (0..18).map(|i| 0.0005 * f64::from(1u32 << i)).collect()
}

/// Buckets for run durations: 10 ms to ~23 h, doubling.
fn run_buckets() -> Vec<f64> {
    (0..24).map(|i| 0.01 * f64::from(1u32 << i)).collect()
}

/// The hook targets there can be (one per service section that may receive events).
pub const HOOK_TARGETS: [&str; 2] = ["memarch", "audit_log"];

/// The final statuses a run can reach, as metric labels.
const FINAL_STATUSES: [&str; 3] = ["succeeded", "failed", "canceled"];

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    /// Collectors exposed under their own standard names (process metrics).
    unprefixed: Registry,
    runs_started: IntCounter,
    runs: IntCounterVec,
    run_duration: HistogramVec,
    ai_tokens: IntCounterVec,
    hook_deliveries: IntCounterVec,
    steps: IntCounterVec,
    step_retries: IntCounterVec,
    step_duration: HistogramVec,
    http: HistogramVec,
    runs_active: IntGauge,
    runs_parked: IntGauge,
    runs_waiting: IntGauge,
    sse_subscribers: IntGauge,
    hook_outbox_depth: IntGaugeVec,
    store: HistogramVec,
    schedule_fires: IntCounterVec,
    webhook_deliveries: IntCounterVec,
    retention_deleted: IntCounterVec,
    tasks: IntCounterVec,
    task_wait: Histogram,
    queue_waiting: IntGaugeVec,
    /// Absent (no series) on a store that does not count its writes.
    store_commits: IntCounterVec,
    store_writes: IntCounterVec,
    store_wal_pages: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The per-action metrics of one running step, resolved once when the step starts.
#[derive(Clone)]
pub struct StepMetrics {
    duration: Histogram,
    retries: IntCounter,
}

impl StepMetrics {
    /// A failed attempt will be retried.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// The step finished after `took` (all attempts and retry delays).
    pub fn finished(&self, took: Duration) {
        self.duration.observe(took.as_secs_f64());
    }
}

/// Values read when metrics are scraped.
#[derive(Debug, Default)]
pub struct Gauges {
    pub runs_active: usize,
    pub runs_parked: Option<u64>,
    /// Runs `WAITING` for a timer, an event or a child run.
    pub runs_waiting: Option<u64>,
    pub sse_subscribers: usize,
    /// Events each hook target has not yet acknowledged.
    pub hook_outbox_depth: Vec<(&'static str, u64)>,
    /// Deliveries of each hook target since start: `(target, outcome, count)` with
    /// outcome `delivered`, `failed` (an attempt) or `dropped`.
    pub hook_deliveries: Vec<(&'static str, &'static str, u64)>,
    /// Tasks waiting on each queue (`None`: the store did not answer).
    pub queue_waiting: Option<Vec<(String, u64)>>,
    /// What the store has written since it opened, when it counts.
    pub store_writes: Option<WriteStats>,
}

/// Why metrics could not be set up: only a programming error (a bad name or a name
/// registered twice) can cause it.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("orchestrator".into()), None)?;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(latency_buckets());
            let h = HistogramVec::new(opts, labels)?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let hook_outbox_depth = IntGaugeVec::new(
            Opts::new(
                "hook_outbox_depth",
                "Hook events in the outbox not yet acknowledged by the target.",
            ),
            &["target"],
        )?;
        registry.register(Box::new(hook_outbox_depth.clone()))?;
        let queue_waiting = IntGaugeVec::new(
            Opts::new("queue_waiting", "Tasks waiting on a queue for a worker."),
            &["queue"],
        )?;
        registry.register(Box::new(queue_waiting.clone()))?;
        let task_wait = Histogram::with_opts(
            HistogramOpts::new(
                "task_wait_seconds",
                "Time a task waited on its queue before a worker claimed it.",
            )
            .buckets(latency_buckets()),
        )?;
        registry.register(Box::new(task_wait.clone()))?;
        let run_duration = HistogramVec::new(
            HistogramOpts::new(
                "run_duration_seconds",
                "Time from a run's start to its end, parked time included, by final status.",
            )
            .buckets(run_buckets()),
            &["status"],
        )?;
        registry.register(Box::new(run_duration.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "The server's version; always 1."),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let runs_started = IntCounter::new(
            "runs_started_total",
            "Runs that left PENDING for the first time.",
        )?;
        registry.register(Box::new(runs_started.clone()))?;
        let metrics = Self {
            runs_started,
            run_duration,
            ai_tokens: counter(
                "ai_tokens_total",
                "Tokens used by ai_router.chat steps (usage.total_tokens), by workflow name and model.",
                &["workflow", "model"],
            )?,
            hook_deliveries: counter(
                "hook_deliveries_total",
                "Hook deliveries by target and outcome: delivered, failed (an attempt), dropped.",
                &["target", "outcome"],
            )?,
            unprefixed: process_registry()?,
            tasks: counter(
                "tasks_total",
                "Claims of tasks that ended, by queue and outcome (completed, failed, expired, canceled).",
                &["queue", "outcome"],
            )?,
            task_wait,
            queue_waiting,
            runs: counter(
                "runs_total",
                "Runs finished, by final status (succeeded, failed, canceled).",
                &["status"],
            )?,
            steps: counter(
                "steps_total",
                "Steps finished, by action and outcome (succeeded, failed, skipped, canceled).",
                &["action", "outcome"],
            )?,
            step_retries: counter(
                "step_retries_total",
                "Failed step attempts that were retried.",
                &["action"],
            )?,
            step_duration: histogram(
                "step_duration_seconds",
                "Time from a step's first attempt to its result, retries included.",
                &["action"],
            )?,
            http: histogram(
                "http_request_duration_seconds",
                "Time to answer an HTTP request (to the response head for streams), by route pattern.",
                &["method", "route", "status"],
            )?,
            store: histogram(
                "store_operation_duration_seconds",
                "Latency of store calls, by operation.",
                &["operation"],
            )?,
            runs_active: gauge("runs_active", "Runs executing on this server.")?,
            runs_parked: gauge(
                "runs_parked",
                "Runs waiting for approval (in the store; they hold no task).",
            )?,
            runs_waiting: gauge(
                "runs_waiting",
                "Runs waiting for a timer, an event or a child run (in the store; they hold no task).",
            )?,
            sse_subscribers: gauge("sse_subscribers", "Open SSE log streams on this server.")?,
            retention_deleted: counter(
                "retention_deleted_total",
                "Finished runs (kind=\"runs\") and acknowledged hook events (kind=\"hook_events\") deleted by retention.",
                &["kind"],
            )?,
            hook_outbox_depth,
            schedule_fires: counter(
                "schedule_fires_total",
                "Schedule ticks by outcome: fired (a run started), skipped (overlap), missed \
                 (coalesced into a later tick), failed (no run could start).",
                &["outcome"],
            )?,
            webhook_deliveries: counter(
                "webhook_deliveries_total",
                "Deliveries to POST /hooks/{name} of existing triggers, by outcome: started, \
                 duplicate, filtered, unauthorized, invalid, failed.",
                &["trigger", "outcome"],
            )?,
            store_commits: counter(
                "store_commits_total",
                "Transactions the store committed; each holds one or more writes (group commit).",
                &[],
            )?,
            store_writes: counter(
                "store_writes_total",
                "Writes the store committed (a run's transition, a log append, a claim, …).",
                &[],
            )?,
            store_wal_pages: counter(
                "store_wal_pages_total",
                "Pages the embedded store appended to its write-ahead log (its write volume; \
                 checkpoints copy them again into the database file).",
                &[],
            )?,
            registry,
        };
        metrics.touch_known_series();
        Ok(metrics)
    }

    /// Creates the series whose labels are known in advance, at zero.
    fn touch_known_series(&self) {
        for status in FINAL_STATUSES {
            self.runs.with_label_values(&[status]);
            self.run_duration.with_label_values(&[status]);
        }
        for target in HOOK_TARGETS {
            self.hook_outbox_depth.with_label_values(&[target]);
            for outcome in ["delivered", "failed", "dropped"] {
                self.hook_deliveries.with_label_values(&[target, outcome]);
            }
        }
    }

    /// Creates the per-action series at zero, for every action the server has.
    pub fn know_actions<'a>(&self, actions: impl IntoIterator<Item = &'a str>) {
        for action in actions {
            for outcome in ["succeeded", "failed", "skipped", "canceled"] {
                self.steps.with_label_values(&[action, outcome]);
            }
            self.step(action);
        }
    }

    /// A run left `PENDING` for the first time.
    pub fn run_started(&self) {
        self.runs_started.inc();
    }

    /// A run reached a terminal status after `took` (from its start; `None` when it never
    /// started, e.g. canceled while queued).
    pub fn run_finished(&self, status: RunStatus, took: Option<Duration>) {
        let label = match status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
            _ => return,
        };
        self.runs.with_label_values(&[label]).inc();
        if let Some(took) = took {
            self.run_duration
                .with_label_values(&[label])
                .observe(took.as_secs_f64());
        }
    }

    /// An `ai_router.chat` step of workflow `workflow` used `tokens` tokens of `model`.
    pub fn ai_tokens(&self, workflow: &str, model: &str, tokens: u64) {
        self.ai_tokens
            .with_label_values(&[workflow, model])
            .inc_by(tokens);
    }

    /// A step of `action` reached a finished status.
    pub fn step_finished(&self, action: &str, status: StepStatus) {
        let outcome = match status {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Canceled => "canceled",
            _ => return,
        };
        self.steps.with_label_values(&[action, outcome]).inc();
    }

    /// The metrics a running step of `action` records.
    pub fn step(&self, action: &str) -> StepMetrics {
        StepMetrics {
            duration: self.step_duration.with_label_values(&[action]),
            retries: self.step_retries.with_label_values(&[action]),
        }
    }

    /// An HTTP request was answered.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let code = status.to_string();
        self.http
            .with_label_values(&[method, route, code.as_str()])
            .observe(took.as_secs_f64());
    }

    /// `n` schedule ticks had `outcome` (`fired`, `skipped`, `missed`, `failed`).
    pub fn schedule_fires(&self, outcome: &str, n: u64) {
        self.schedule_fires.with_label_values(&[outcome]).inc_by(n);
    }

    /// A delivery to webhook trigger `trigger` had `outcome`.
    pub fn webhook_delivery(&self, trigger: &str, outcome: &str) {
        self.webhook_deliveries
            .with_label_values(&[trigger, outcome])
            .inc();
    }

    /// Retention deleted `n` records of `kind` (`runs` or `hook_events`).
    pub fn retention_deleted(&self, kind: &str, n: u64) {
        self.retention_deleted.with_label_values(&[kind]).inc_by(n);
    }

    /// Deleted by retention since start, of `kind` (`runs`, `hook_events`).
    pub fn retention_deleted_count(&self, kind: &str) -> u64 {
        self.retention_deleted.with_label_values(&[kind]).get()
    }

    /// The latency histogram of one store operation.
    pub fn store_operation(&self, operation: &str) -> Histogram {
        self.store.with_label_values(&[operation])
    }

    /// A worker claimed a task that waited `waited` on its queue.
    pub fn task_claimed(&self, waited: Duration) {
        self.task_wait.observe(waited.as_secs_f64());
    }

    /// A task's claim ended on `queue` (`completed`, `failed`, `expired`), or the task was
    /// `canceled`.
    pub fn task_ended(&self, queue: &str, outcome: &str) {
        self.tasks.with_label_values(&[queue, outcome]).inc();
    }

    /// The text exposition of every metric, after setting the scraped `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        self.runs_active.set(clamp(gauges.runs_active as u64));
        if let Some(parked) = gauges.runs_parked {
            self.runs_parked.set(clamp(parked));
        }
        if let Some(waiting) = gauges.runs_waiting {
            self.runs_waiting.set(clamp(waiting));
        }
        self.sse_subscribers
            .set(clamp(gauges.sse_subscribers as u64));
        for (target, depth) in &gauges.hook_outbox_depth {
            self.hook_outbox_depth
                .with_label_values(&[*target])
                .set(clamp(*depth));
        }
        // The hook workers count deliveries themselves; the counters catch up here (only
        // this render moves them, so they never go backwards).
        for (target, outcome, total) in &gauges.hook_deliveries {
            let counter = self.hook_deliveries.with_label_values(&[*target, *outcome]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        if let Some(queues) = &gauges.queue_waiting {
            // Queues no longer listed (none should vanish) keep no stale value.
            self.queue_waiting.reset();
            for (queue, waiting) in queues {
                self.queue_waiting
                    .with_label_values(&[queue.as_str()])
                    .set(clamp(*waiting));
            }
        }
        if let Some(stats) = gauges.store_writes {
            for (counter, total) in [
                (&self.store_commits, stats.commits),
                (&self.store_writes, stats.writes),
                (&self.store_wal_pages, stats.wal_pages),
            ] {
                let counter = counter.with_label_values::<&str>(&[]);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        let mut out = Vec::new();
        // Encoding plain families into a Vec cannot fail (no I/O, names already checked).
        let encoder = TextEncoder::new();
        let _ = encoder.encode(&self.registry.gather(), &mut out);
        let _ = encoder.encode(&self.unprefixed.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A registry of the process collector (CPU, memory, open file descriptors), where the
/// platform has one.
fn process_registry() -> Result<Registry, prometheus::Error> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(registry)
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Times a future and observes its duration into `histogram`.
pub async fn timed<T>(histogram: &Histogram, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = work.await;
    histogram.observe(started.elapsed().as_secs_f64());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_prefixed_and_labelled() {
        let m = Metrics::new().unwrap();
        m.run_started();
        m.run_finished(RunStatus::Succeeded, Some(Duration::from_millis(1500)));
        m.run_finished(RunStatus::Running, None);
        m.ai_tokens("summarise", "gpt-x", 42);
        m.step_finished("http", StepStatus::Failed);
        m.step("http").retried();
        m.step("http").finished(Duration::from_millis(3));
        m.http_request("GET", "/v1/runs/{id}", 200, Duration::from_millis(1));
        m.store_operation("commit").observe(0.001);
        m.schedule_fires("fired", 2);
        m.webhook_delivery("github", "started");
        m.retention_deleted("runs", 3);
        m.task_claimed(Duration::from_millis(2));
        m.task_ended("build", "expired");
        let text = m.render(&Gauges {
            runs_active: 2,
            runs_parked: Some(1),
            runs_waiting: Some(2),
            sse_subscribers: 3,
            hook_outbox_depth: vec![("audit_log", 4)],
            hook_deliveries: vec![("audit_log", "failed", 3)],
            queue_waiting: Some(vec![("build".into(), 5)]),
            store_writes: Some(WriteStats {
                commits: 6,
                writes: 9,
                wal_pages: 40,
            }),
        });
        for line in [
            "orchestrator_store_commits_total 6",
            "orchestrator_store_writes_total 9",
            "orchestrator_store_wal_pages_total 40",
            "orchestrator_runs_started_total 1",
            "orchestrator_runs_total{status=\"succeeded\"} 1",
            "orchestrator_runs_total{status=\"failed\"} 0",
            "orchestrator_run_duration_seconds_count{status=\"succeeded\"} 1",
            "orchestrator_run_duration_seconds_count{status=\"canceled\"} 0",
            "orchestrator_ai_tokens_total{model=\"gpt-x\",workflow=\"summarise\"} 42",
            "orchestrator_hook_deliveries_total{outcome=\"failed\",target=\"audit_log\"} 3",
            "orchestrator_hook_deliveries_total{outcome=\"dropped\",target=\"memarch\"} 0",
            "orchestrator_hook_outbox_depth{target=\"memarch\"} 0",
            "orchestrator_steps_total{action=\"http\",outcome=\"failed\"} 1",
            "orchestrator_step_retries_total{action=\"http\"} 1",
            "orchestrator_step_duration_seconds_count{action=\"http\"} 1",
            "orchestrator_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/runs/{id}\",status=\"200\"} 1",
            "orchestrator_store_operation_duration_seconds_count{operation=\"commit\"} 1",
            "orchestrator_runs_active 2",
            "orchestrator_runs_parked 1",
            "orchestrator_runs_waiting 2",
            "orchestrator_sse_subscribers 3",
            "orchestrator_hook_outbox_depth{target=\"audit_log\"} 4",
            "orchestrator_schedule_fires_total{outcome=\"fired\"} 2",
            "orchestrator_webhook_deliveries_total{outcome=\"started\",trigger=\"github\"} 1",
            "orchestrator_retention_deleted_total{kind=\"runs\"} 3",
            "orchestrator_tasks_total{outcome=\"expired\",queue=\"build\"} 1",
            "orchestrator_task_wait_seconds_count 1",
            "orchestrator_queue_waiting{queue=\"build\"} 5",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("status=\"running\""));
        assert!(!text.contains("status=\"started\""));
        let version = format!(
            "orchestrator_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
        if cfg!(target_os = "linux") {
            assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
            assert!(text.contains("\nprocess_open_fds "), "{text}");
        }
    }

    #[test]
    fn hook_delivery_counters_follow_the_workers_counts_without_going_back() {
        let m = Metrics::new().unwrap();
        let render = |n| {
            m.render(&Gauges {
                hook_deliveries: vec![("memarch", "delivered", n)],
                ..Gauges::default()
            })
        };
        render(5);
        let text = render(7);
        assert!(text.contains(
            "orchestrator_hook_deliveries_total{outcome=\"delivered\",target=\"memarch\"} 7"
        ));
        let text = render(3);
        assert!(text.contains(
            "orchestrator_hook_deliveries_total{outcome=\"delivered\",target=\"memarch\"} 7"
        ));
    }
}
