//! `orchestrator worker`: the shipped worker (DESIGN §8). It long-polls the server for
//! tasks of its queues, runs `--exec` once per task (see [`super::exec`]), at most
//! `--concurrency` at a time, and ends each claim by how the command exited.
//!
//! It polls only for as many tasks as it has free slots, so a claimed task never waits
//! on this side. When the server is away it tries again with backoff (100 ms doubling to
//! 5 s). On SIGTERM or SIGINT it stops polling, lets the commands in flight finish and
//! report, and exits 0; a second signal kills them (their tasks are handed out again once
//! their leases expire).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use reqwest::Method;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Ctx;
use super::exec::{self, Claimed};
use super::http::ClientError;

/// How long one poll waits for a task on the server.
const POLL_WAIT_MS: u64 = 20_000;

/// `worker --queue Q [--queue …] --exec CMD [--concurrency N] [--name NAME]`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// A queue to take tasks from (repeat for several).
    #[arg(long = "queue", required = true, value_name = "QUEUE")]
    queues: Vec<String>,
    /// The command run per task, by `sh -c`: the payload is its stdin as JSON; exit 0
    /// with JSON (or text) on stdout completes the task, any other exit fails it.
    #[arg(long, value_name = "CMD")]
    exec: String,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    concurrency: u32,
    /// The name the server lists this worker under (default: host name and process id).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

/// Runs the worker until SIGTERM or SIGINT (exit 0), or until the server refuses it for
/// good (a bad token, a bad queue name: exit 1).
pub async fn run(ctx: &Ctx, args: WorkerArgs) -> Result<ExitCode, ClientError> {
    let name = args.name.clone().unwrap_or_else(default_name);
    let api = Arc::new(ctx.api.clone());
    let command = Arc::new(args.exec.clone());
    let slots = Arc::new(Semaphore::new(args.concurrency as usize));
    let mut running: JoinSet<()> = JoinSet::new();
    let mut stop = Box::pin(signal());
    eprintln!(
        "orchestrator worker {name}: polling {} with up to {} task(s) at once",
        args.queues.join(", "),
        args.concurrency
    );
    let mut failures = 0u32;
    loop {
        while running.try_join_next().is_some() {}
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let body = json!({
            "queues": args.queues,
            "worker": name,
            "max": permits.len(),
            "wait_ms": POLL_WAIT_MS,
        });
        let answer = tokio::select! {
            answer = api.send(Method::POST, &["v1", "tasks", "poll"], &body) => answer,
            _ = &mut stop => break,
        };
        let items = match answer {
            Ok(answer) => {
                failures = 0;
                answer["items"].as_array().cloned().unwrap_or_default()
            }
            Err(e) if e.is_transient() => {
                failures += 1;
                let delay = backoff(failures);
                eprintln!(
                    "orchestrator worker {name}: {e}; trying again in {} ms",
                    delay.as_millis()
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = &mut stop => break,
                }
            }
            Err(e) => return Err(e),
        };
        for item in items {
            let Some(task) = Claimed::from_json(&item) else {
                continue;
            };
            let Some(permit) = permits.pop() else { break };
            let (api, command, name) = (api.clone(), command.clone(), name.clone());
            running.spawn(async move {
                eprintln!(
                    "orchestrator worker {name}: {} (run {}, step {}, attempt {}) started",
                    task.id, task.run_id, task.step, task.attempt
                );
                let outcome = exec::run(&api, &command, &task).await;
                eprintln!("orchestrator worker {name}: {} {outcome}", task.id);
                drop(permit);
            });
        }
    }
    drain(&name, running).await;
    Ok(ExitCode::SUCCESS)
}

/// Waits for the tasks in flight to finish and report; a second signal kills them.
async fn drain(name: &str, mut running: JoinSet<()>) {
    while running.try_join_next().is_some() {}
    if running.is_empty() {
        eprintln!("orchestrator worker {name}: stopped");
        return;
    }
    eprintln!(
        "orchestrator worker {name}: stopping; waiting for {} task(s) in flight (signal again to kill them)",
        running.len()
    );
    let all_done = async { while running.join_next().await.is_some() {} };
    tokio::select! {
        _ = all_done => eprintln!("orchestrator worker {name}: stopped"),
        // Dropping the set kills the commands (kill_on_drop) and their tasks go back to
        // their queues when the leases run out.
        _ = signal() => eprintln!("orchestrator worker {name}: killed the tasks in flight"),
    }
}

fn backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << failures.min(6));
    Duration::from_millis(ms.min(5_000))
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Completes on SIGTERM or SIGINT.
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        let ms: Vec<u128> = (1..=8).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }
}
