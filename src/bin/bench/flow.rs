//! Flow-control scenarios: a `foreach` of many `http` items, and many runs parked on a
//! durable timer.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::scenarios::{Client, for_each_concurrently};
use crate::server::Server;

/// One `foreach` run, measured.
pub struct Foreach {
    pub seconds: f64,
    pub commits: f64,
    pub cpu_us_per_item: f64,
}

/// A run of one `foreach` step over `items` GETs at `concurrency`, polled to its end.
pub async fn foreach(
    server: &Server,
    client: &Client,
    target_url: &str,
    items: usize,
    concurrency: usize,
) -> anyhow::Result<Foreach> {
    let workflow = client
        .create_workflow(json!({"name": "foreach", "steps": [
            {"name": "each", "action": "http", "foreach": "{{ context.items }}",
             "concurrency": concurrency,
             "input": {"method": "GET", "url": format!("{target_url}/ok?i={{{{ item }}}}")}}
        ]}))
        .await?;
    let commits = || {
        client.metric_sum(
            "orchestrator_store_operation_duration_seconds_count",
            "operation=\"commit\"",
        )
    };
    let commits_before = commits().await?;
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let run = client
        .post(
            "/v1/runs",
            &json!({"workflow_id": workflow, "context": {"items": (0..items).collect::<Vec<_>>()}}),
        )
        .await?;
    let id = run["id"].as_str().unwrap_or_default().to_owned();
    loop {
        let run = client.get(&format!("/v1/runs/{id}")).await?;
        match run["status"].as_str() {
            Some("SUCCEEDED") => break,
            Some("FAILED" | "CANCELED") => bail!("the foreach run ended {}", run["status"]),
            // Polled gently: reading a run with 1,000 item outputs costs the server too.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    Ok(Foreach {
        seconds,
        commits: commits().await? - commits_before,
        cpu_us_per_item: cpu * 1e6 / items as f64,
    })
}

/// Runs parked on a timer, measured.
pub struct Waiting {
    pub runs: usize,
    pub rss_before: u64,
    pub rss_waiting: u64,
    pub park_s: f64,
}

/// Starts `runs` runs that each wait an hour, and reads the server's RSS once all wait.
pub async fn waiting(server: &Server, client: &Client, runs: usize) -> anyhow::Result<Waiting> {
    let workflow = client
        .create_workflow(json!({"name": "waiting", "steps": [
            {"name": "nap", "action": "wait", "input": {"duration_ms": 3_600_000}}
        ]}))
        .await?;
    let rss_before = server.rss();
    let started = Instant::now();
    for_each_concurrently(runs, 64, {
        let (client, workflow) = (client.clone(), workflow.clone());
        move |_| {
            let (client, workflow) = (client.clone(), workflow.clone());
            async move {
                client
                    .post("/v1/runs", &json!({"workflow_id": workflow}))
                    .await
                    .map(|_| ())
            }
        }
    })
    .await?;
    loop {
        let waiting = client
            .metric_sum("orchestrator_runs_waiting", "")
            .await
            .unwrap_or_default();
        if waiting as usize >= runs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Waiting {
        runs,
        rss_before,
        rss_waiting: server.rss(),
        park_s: started.elapsed().as_secs_f64(),
    })
}
