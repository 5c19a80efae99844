//! Task queues (DESIGN §8): the round trip of a `task` step (enqueue → poll → complete →
//! next step) and task throughput with workers, each side by side with the same workflow
//! done by `http` steps.
//!
//! T2 = a `task` step on queue `bench` whose payload carries the run's tag, then an `http`
//! GET that reports the tag to the target (so the harness learns the run is done without
//! polling). H2 = the same two steps with the first one an `http` GET.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::scenarios::Client;

/// The task workflow.
pub fn t2(target: &str) -> Value {
    json!({"name": "t2", "steps": [
        {"name": "work", "action": "task", "input": {"queue": "bench", "payload": {"tag": "{{ context.tag }}"}}},
        {"name": "next", "action": "http", "input": {"method": "GET", "url": format!("{target}/ok?done={{{{ context.tag }}}}")}}
    ]})
}

/// The same workflow with an `http` first step.
pub fn h2(target: &str) -> Value {
    json!({"name": "h2", "steps": [
        {"name": "work", "action": "http", "input": {"method": "GET", "url": format!("{target}/ok")}},
        {"name": "next", "action": "http", "input": {"method": "GET", "url": format!("{target}/ok?done={{{{ context.tag }}}}")}}
    ]})
}

/// Workers inside the harness: each keeps one long poll open for up to `max` tasks and
/// completes every task at once (no process per task), until stopped.
pub struct FastWorkers {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Milliseconds from a task's `enqueued_at` to its arrival here.
    pub wake_ms: Arc<Mutex<Vec<f64>>>,
}

impl FastWorkers {
    pub fn start(client: &Client, workers: usize, max: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let wake_ms = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..workers)
            .map(|i| {
                let (client, stop, wake_ms) = (client.clone(), stop.clone(), wake_ms.clone());
                tokio::spawn(async move {
                    let name = format!("bench-{i}");
                    while !stop.load(Ordering::Relaxed) {
                        let body = json!({"queues": ["bench"], "worker": name, "max": max, "wait_ms": 1000});
                        let answer = client.post("/v1/tasks/poll", &body).await?;
                        let now = chrono::Utc::now();
                        let items = answer["items"].as_array().cloned().unwrap_or_default();
                        let done = items.iter().map(|task| {
                            let client = client.clone();
                            let wake_ms = wake_ms.clone();
                            async move {
                                if let Some(at) = task["enqueued_at"].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok()) {
                                    wake_ms.lock().await.push((now - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                                }
                                let id = task["id"].as_str().unwrap_or_default();
                                let body = json!({"token": task["token"], "output": {"ok": true}});
                                client.post(&format!("/v1/tasks/{id}/complete"), &body).await
                            }
                        });
                        for result in futures::future::join_all(done).await {
                            result?;
                        }
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        Self {
            stop,
            handles,
            wake_ms,
        }
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.await??;
        }
        Ok(())
    }
}

/// `orchestrator worker` processes (this binary in `__worker` mode) running `cat` per task.
pub struct ShellWorkers {
    children: Vec<std::process::Child>,
}

impl ShellWorkers {
    pub fn start(server: &str, workers: usize, concurrency: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let children = (0..workers)
            .map(|i| {
                std::process::Command::new(&exe)
                    .args(["__worker", "worker", "--server", server, "--queue", "bench"])
                    .args(["--exec", "cat", "--concurrency", &concurrency.to_string()])
                    .args(["--name", &format!("shell-{i}")])
                    .stderr(std::process::Stdio::null())
                    .spawn()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { children })
    }
}

impl Drop for ShellWorkers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A pause for workers to open their polls.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}
