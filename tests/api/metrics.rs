//! `/metrics` as a dashboard reads it: every documented family present from the first
//! scrape, runs counted once when they start and once when they finish (so sums add up),
//! run durations, the build, the process, and hook deliveries. Both stores.

use std::collections::BTreeMap;

use serde_json::json;

use crate::helpers::{TestApp, unused_port, wait_until};
use crate::stores::{Store, on_both_stores, spawn_on};

on_both_stores!(
    every_family_is_there_from_the_first_scrape,
    runs_started_and_finished_add_up_to_the_runs_started,
    hook_delivery_failures_are_counted,
    the_embedded_store_counts_its_commits_writes_and_wal_pages,
);

type Samples = BTreeMap<String, f64>;

async fn scrape(app: &TestApp) -> (String, Samples) {
    let text = app.get("/metrics").await.text().await.unwrap();
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect();
    (text, samples)
}

/// The sum of every sample of `family` (a name without labels).
fn sum(samples: &Samples, family: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| *k == family || k.starts_with(&format!("{family}{{")))
        .map(|(_, v)| v)
        .sum()
}

async fn every_family_is_there_from_the_first_scrape(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let (text, samples) = scrape(&app).await;
    for family in [
        "orchestrator_runs_started_total",
        "orchestrator_runs_total",
        "orchestrator_run_duration_seconds",
        "orchestrator_steps_total",
        "orchestrator_step_retries_total",
        "orchestrator_step_duration_seconds",
        "orchestrator_store_operation_duration_seconds",
        "orchestrator_runs_active",
        "orchestrator_runs_parked",
        "orchestrator_sse_subscribers",
        "orchestrator_hook_outbox_depth",
        "orchestrator_hook_deliveries_total",
        "orchestrator_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing from\n{text}"
        );
    }
    for series in [
        "orchestrator_runs_started_total",
        "orchestrator_runs_total{status=\"failed\"}",
        "orchestrator_run_duration_seconds_count{status=\"canceled\"}",
        "orchestrator_hook_outbox_depth{target=\"memarch\"}",
        "orchestrator_hook_outbox_depth{target=\"audit_log\"}",
        "orchestrator_hook_deliveries_total{outcome=\"failed\",target=\"audit_log\"}",
        "orchestrator_steps_total{action=\"ai_router.chat\",outcome=\"failed\"}",
        "orchestrator_step_retries_total{action=\"http\"}",
        "orchestrator_step_duration_seconds_count{action=\"scm.call\"}",
    ] {
        assert_eq!(samples.get(series), Some(&0.0), "{series}");
    }
    let build = format!(
        "orchestrator_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(samples.get(&build), Some(&1.0));
    assert!(samples["process_resident_memory_bytes"] > 1e6);
    assert!(samples["process_open_fds"] >= 3.0);
    assert!(
        !text.contains("status=\"started\""),
        "a start is no final status"
    );
}

async fn runs_started_and_finished_add_up_to_the_runs_started(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    // The pause makes each successful run last: a run within one millisecond lasts 0 s.
    let ok = app
        .create_workflow(&json!({"name": "ok", "steps": [
            {"name": "pause", "action": "wait", "input": {"duration_ms": 20}},
            {"name": "a", "action": "transform", "input": {"value": 1}}
        ]}))
        .await;
    let failing = app
        .create_workflow(&json!({"name": "failing", "steps": [
            {"name": "a", "action": "transform", "input": {"value": "{{ context.x.y }}"}}
        ]}))
        .await;
    let gated = app
        .create_workflow(&json!({"name": "gated", "steps": [
            {"name": "gate", "action": "transform", "requires_approval": true, "input": {"value": 1}}
        ]}))
        .await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(app.start_run(&ok, json!({})).await);
    }
    let failed = app.start_run(&failing, json!({})).await;
    let canceled = app.start_run(&gated, json!({})).await;
    app.wait_for_status(&canceled, "WAITING_APPROVAL").await;
    let parked = app.start_run(&gated, json!({})).await;
    app.wait_for_status(&parked, "WAITING_APPROVAL").await;
    app.post(&format!("/v1/runs/{canceled}/cancel"), &json!({}))
        .await;
    for run in runs.iter().chain([&failed, &canceled]) {
        app.wait_until_finished(run).await;
    }
    // A re-run starts the run again and finishes it again.
    let retried = app
        .post(
            &format!("/v1/runs/{failed}/retry"),
            &json!({"context": {"x": {"y": 1}}}),
        )
        .await;
    assert_eq!(retried.status(), 200);
    assert_eq!(
        app.wait_until_finished(&failed).await["status"],
        "SUCCEEDED"
    );

    let samples = wait_until("every finished run to be counted", || async {
        let (_, samples) = scrape(&app).await;
        (sum(&samples, "orchestrator_runs_total") == 6.0).then_some(samples)
    })
    .await;
    let started = 7.0; // six runs, one of them twice
    assert_eq!(samples["orchestrator_runs_started_total"], started);
    assert_eq!(
        sum(&samples, "orchestrator_runs_total") + samples["orchestrator_runs_parked"],
        started,
        "every start ends once, or is still parked"
    );
    assert_eq!(
        samples["orchestrator_runs_total{status=\"succeeded\"}"],
        4.0
    );
    assert_eq!(samples["orchestrator_runs_total{status=\"failed\"}"], 1.0);
    assert_eq!(samples["orchestrator_runs_total{status=\"canceled\"}"], 1.0);
    assert_eq!(
        sum(&samples, "orchestrator_run_duration_seconds_count"),
        6.0
    );
    assert_eq!(
        samples["orchestrator_run_duration_seconds_count{status=\"succeeded\"}"],
        4.0
    );
    assert!(samples["orchestrator_run_duration_seconds_sum{status=\"succeeded\"}"] > 0.0);
    assert_eq!(
        samples["orchestrator_run_duration_seconds_bucket{status=\"failed\",le=\"+Inf\"}"],
        1.0
    );
}

async fn hook_delivery_failures_are_counted(store: Store) {
    let down = format!("http://127.0.0.1:{}", unused_port());
    let app = spawn_on(store, move |raw| {
        raw.audit_log.base_url = down;
        raw.hooks.backoff = std::time::Duration::from_millis(10);
        raw.hooks.max_backoff = std::time::Duration::from_millis(20);
    })
    .await;
    let wf = app
        .create_workflow(&json!({"name": "heard", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_until_finished(&run).await;
    let samples = wait_until("failed deliveries to be counted", || async {
        let (_, samples) = scrape(&app).await;
        let failed = "orchestrator_hook_deliveries_total{outcome=\"failed\",target=\"audit_log\"}";
        (samples.get(failed).copied().unwrap_or(0.0) >= 2.0).then_some(samples)
    })
    .await;
    assert!(samples["orchestrator_hook_outbox_depth{target=\"audit_log\"}"] >= 1.0);
    assert_eq!(
        samples["orchestrator_hook_deliveries_total{outcome=\"delivered\",target=\"audit_log\"}"],
        0.0
    );
}

async fn the_embedded_store_counts_its_commits_writes_and_wal_pages(store: Store) {
    let embedded = matches!(store, Store::Sqlite);
    let app = spawn_on(store, |_| {}).await;
    let wf = app
        .create_workflow(&json!({"name": "counted", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}},
            {"name": "b", "action": "transform", "input": {"value": 2}}
        ]}))
        .await;
    let (_, before) = scrape(&app).await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_until_finished(&run).await;
    let (text, after) = scrape(&app).await;
    let families = [
        "orchestrator_store_commits_total",
        "orchestrator_store_writes_total",
        "orchestrator_store_wal_pages_total",
    ];
    if !embedded {
        for family in families {
            assert!(!after.contains_key(family), "{family} in\n{text}");
        }
        return;
    }
    let grew = |family: &str| after[family] - before.get(family).copied().unwrap_or(0.0);
    // The run's creation and its transitions are writes; every commit holds at least one
    // and appends at least one page.
    assert!(grew("orchestrator_store_writes_total") >= 3.0, "{text}");
    assert!(grew("orchestrator_store_commits_total") >= 1.0, "{text}");
    assert!(
        grew("orchestrator_store_writes_total") >= grew("orchestrator_store_commits_total"),
        "{text}"
    );
    assert!(
        grew("orchestrator_store_wal_pages_total") >= grew("orchestrator_store_commits_total"),
        "{text}"
    );
}
