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

use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::{RunStatus, StepStatus};

/// The media type of `GET /metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets for step, request and store latencies: 0.5 ms to ~65 s, doubling.
fn latency_buckets() -> Vec<f64> {
    (0..18).map(|i| 0.0005 * f64::from(1u32 << i)).collect()
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    runs: IntCounterVec,
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
    tasks: IntCounterVec,
    task_wait: Histogram,
    queue_waiting: IntGaugeVec,
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
    /// Tasks waiting on each queue (`None`: the store did not answer).
    pub queue_waiting: Option<Vec<(String, u64)>>,
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
        Ok(Self {
            tasks: counter(
                "tasks_total",
                "Claims of tasks that ended, by queue and outcome (completed, failed, expired, canceled).",
                &["queue", "outcome"],
            )?,
            task_wait,
            queue_waiting,
            runs: counter(
                "runs_total",
                "Runs started (status=\"started\") and finished (succeeded, failed, canceled).",
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
            hook_outbox_depth,
            registry,
        })
    }

    /// A run left `PENDING` for the first time.
    pub fn run_started(&self) {
        self.runs.with_label_values(&["started"]).inc();
    }

    /// A run reached a terminal status.
    pub fn run_finished(&self, status: RunStatus) {
        let label = match status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
            _ => return,
        };
        self.runs.with_label_values(&[label]).inc();
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
        if let Some(queues) = &gauges.queue_waiting {
            // Queues no longer listed (none should vanish) keep no stale value.
            self.queue_waiting.reset();
            for (queue, waiting) in queues {
                self.queue_waiting
                    .with_label_values(&[queue.as_str()])
                    .set(clamp(*waiting));
            }
        }
        let mut out = Vec::new();
        // Encoding plain families into a Vec cannot fail (no I/O, names already checked).
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
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
        m.run_finished(RunStatus::Succeeded);
        m.run_finished(RunStatus::Running);
        m.step_finished("http", StepStatus::Failed);
        m.step("http").retried();
        m.step("http").finished(Duration::from_millis(3));
        m.http_request("GET", "/v1/runs/{id}", 200, Duration::from_millis(1));
        m.store_operation("commit").observe(0.001);
        m.task_claimed(Duration::from_millis(2));
        m.task_ended("build", "expired");
        let text = m.render(&Gauges {
            runs_active: 2,
            runs_parked: Some(1),
            runs_waiting: Some(2),
            sse_subscribers: 3,
            hook_outbox_depth: vec![("audit_log", 4)],
            queue_waiting: Some(vec![("build".into(), 5)]),
        });
        for line in [
            "orchestrator_runs_total{status=\"started\"} 1",
            "orchestrator_runs_total{status=\"succeeded\"} 1",
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
            "orchestrator_tasks_total{outcome=\"expired\",queue=\"build\"} 1",
            "orchestrator_task_wait_seconds_count 1",
            "orchestrator_queue_waiting{queue=\"build\"} 5",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("status=\"running\""));
    }
}
