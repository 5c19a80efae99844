//! `/v1/events` and `/v1/events/stream`: every run and step event in one global order,
//! filters, paging, resume with `Last-Event-ID` without gap or repeat, the stream limit.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both::{Backend, both_stores, spawn_on};
use crate::helpers::{LogStream, TestApp, spawn_app, spawn_app_with};

const TWO_STEPS: &str = r#"{"name": "pair", "steps": [
    {"name": "a", "action": "transform", "input": {"value": 1}},
    {"name": "b", "action": "transform", "input": {"value": 2}}]}"#;

async fn page(app: &TestApp, query: &str) -> Value {
    let response = app.get(&format!("/v1/events{query}")).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn ids(items: &Value) -> Vec<u64> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

async fn finished_runs(app: &TestApp, n: usize) -> (String, Vec<String>) {
    let wf = app
        .create_workflow(&serde_json::from_str(TWO_STEPS).unwrap())
        .await;
    let mut runs = Vec::new();
    for i in 0..n {
        let run = app.start_run(&wf, json!({"i": i})).await;
        app.wait_until_finished(&run).await;
        runs.push(run);
    }
    (wf, runs)
}

async fn the_feed_lists_every_event_in_one_order_with_filters_and_pages(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let (wf, runs) = finished_runs(&app, 2).await;
    let (other_wf, _) = finished_runs(&app, 1).await;
    let all = page(&app, "?limit=500").await;
    assert!(all["next_after"].is_null());
    let items = all["items"].as_array().unwrap();
    let order = ids(&all["items"]);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    let first_run: Vec<&Value> = items.iter().filter(|e| e["run_id"] == runs[0]).collect();
    let kinds: Vec<&str> = first_run
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run.started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run.succeeded"), "{kinds:?}");
    assert!(kinds.contains(&"step.succeeded"));
    let seqs: Vec<u64> = first_run
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let step_event = first_run
        .iter()
        .find(|e| e["type"] == "step.succeeded")
        .unwrap();
    assert_eq!(step_event["workflow_id"], wf.as_str());
    assert!(step_event["step"].is_string() && step_event["ts"].is_string());

    let of_run = page(&app, &format!("?run_id={}", runs[1])).await;
    assert!(
        of_run["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["run_id"] == runs[1])
    );
    let of_other = page(&app, &format!("?workflow_id={other_wf}")).await;
    assert!(!of_other["items"].as_array().unwrap().is_empty());
    assert!(
        of_other["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["workflow_id"] == other_wf)
    );
    let ends = page(&app, "?type=run.succeeded,run.failed").await;
    assert_eq!(ends["items"].as_array().unwrap().len(), 3);
    let repeated = page(&app, "?type=run.succeeded,run.failed,run.succeeded").await;
    assert_eq!(
        repeated["items"], ends["items"],
        "a type named twice counts once"
    );
    let many: Vec<String> = (0..33).map(|i| format!("made.up{i}")).collect();
    let refused = app
        .get(&format!("/v1/events?type={}", many.join(",")))
        .await;
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/type", "{problem}");
    let stream = app
        .get(&format!("/v1/events/stream?type={}", many.join(",")))
        .await;
    assert_eq!(stream.status(), 400, "the stream takes the same filter");

    // Paging: full pages name the next `after`; together they are the whole feed.
    let mut paged = Vec::new();
    let mut query = "?limit=4".to_owned();
    loop {
        let p = page(&app, &query).await;
        paged.extend(ids(&p["items"]));
        match p["next_after"].as_u64() {
            Some(after) => query = format!("?limit=4&after={after}"),
            None => break,
        }
    }
    assert_eq!(paged, order);

    // Newest first: pages walk back with `before` until the oldest event.
    let mut back = Vec::new();
    let mut query = "?order=desc&limit=5".to_owned();
    loop {
        let p = page(&app, &query).await;
        assert!(p.get("next_after").is_none(), "{p}");
        back.extend(ids(&p["items"]));
        match p["next_before"].as_u64() {
            Some(before) => query = format!("?order=desc&limit=5&before={before}"),
            None => break,
        }
    }
    assert_eq!(back, order.iter().rev().copied().collect::<Vec<_>>());
    let newest_end = page(&app, "?order=desc&limit=1&type=run.succeeded").await;
    assert_eq!(
        newest_end["items"][0]["id"], ends["items"][2]["id"],
        "{newest_end}"
    );
    let between = page(&app, &format!("?after={}&before={}", order[1], order[4])).await;
    assert_eq!(ids(&between["items"]), order[2..4]);
    let beyond = page(&app, &format!("?after={}", u64::MAX)).await;
    assert_eq!(
        beyond["items"],
        json!([]),
        "no position is after the last one"
    );
    for bad in [
        "?limit=0",
        "?limit=100000",
        "?after=x",
        "?colour=red",
        "?order=sideways",
        "?before=-1",
    ] {
        assert_eq!(
            app.get(&format!("/v1/events{bad}")).await.status(),
            400,
            "{bad}"
        );
    }
}

async fn stream(app: &TestApp, query: &str, last_event_id: Option<u64>) -> LogStream {
    let mut request = app
        .client
        .get(app.url(&format!("/v1/events/stream{query}")))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    LogStream::new(request.send().await.unwrap())
}

async fn a_stream_follows_live_and_resumes_after_the_last_id_without_gap_or_repeat(
    backend: Backend,
) {
    let app = spawn_on(backend, |_| {}).await;
    let (wf, _) = finished_runs(&app, 1).await;
    let mut live = stream(&app, "", None).await;
    let mut seen: Vec<u64> = Vec::new();
    let backlog = page(&app, "?limit=500").await;
    let backlog_len = backlog["items"].as_array().unwrap().len();
    while seen.len() < backlog_len {
        let event = live.next().await.unwrap();
        assert_eq!(event.event, "event");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(event.id, data["id"].to_string());
        seen.push(data["id"].as_u64().unwrap());
    }
    // Live: a run started now arrives on the open stream.
    let run = app.start_run(&wf, json!({})).await;
    let arrived = live
        .until(|e| e.data.contains(&run) && e.data.contains("run.succeeded"))
        .await;
    seen.extend(arrived.iter().map(|e| e.id.parse::<u64>().unwrap()));
    drop(live);
    // Events committed while nobody listened, then a resume after the last id seen.
    let more = app.start_run(&wf, json!({})).await;
    app.wait_until_finished(&more).await;
    let all = ids(&page(&app, "?limit=500").await["items"]);
    let mut resumed = stream(&app, "", seen.last().copied()).await;
    while seen.len() < all.len() {
        let event = resumed.next().await.unwrap();
        seen.push(event.id.parse().unwrap());
    }
    assert_eq!(seen, all, "the stream skipped or repeated events");
    // A filtered stream from the start sees only its run.
    let mut filtered = stream(&app, &format!("?run_id={more}&type=run.succeeded"), None).await;
    let only = filtered.next().await.unwrap();
    let data: Value = serde_json::from_str(&only.data).unwrap();
    assert_eq!(
        (data["run_id"].as_str(), data["type"].as_str()),
        (Some(more.as_str()), Some("run.succeeded"))
    );
}

both_stores!(
    the_feed_lists_every_event_in_one_order_with_filters_and_pages,
    a_stream_follows_live_and_resumes_after_the_last_id_without_gap_or_repeat,
);

#[tokio::test]
async fn the_feeds_backlog_is_streamed_in_a_few_chunks_not_one_per_event() {
    use futures::StreamExt;
    let app = spawn_app().await;
    finished_runs(&app, 5).await;
    let backlog = page(&app, "?limit=500").await;
    let items = backlog["items"].as_array().unwrap();
    assert!(items.len() >= 25, "{backlog}");
    let last = items
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .max()
        .unwrap();
    let response = app
        .client
        .get(app.url("/v1/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut body = response.bytes_stream();
    let (mut text, mut chunks) = (String::new(), 0);
    let last_event = format!("id: {last}\n");
    while !(text.contains(&last_event) && text.ends_with("\n\n")) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the backlog arrives")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        chunks += 1;
    }
    assert_eq!(text.matches("event: event").count(), items.len());
    assert!(
        chunks <= 3,
        "{} events came in {chunks} chunks",
        items.len()
    );
}

#[tokio::test]
async fn streams_share_the_log_stream_limit_and_end_with_shutdown() {
    let app = spawn_app_with(|raw| raw.logs.max_streams = 1).await;
    let open = app
        .client
        .get(app.url("/v1/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let busy = app.get("/v1/events/stream").await;
    assert_eq!(busy.status(), 503);
    let bad = app
        .client
        .get(app.url("/v1/events"))
        .header("Last-Event-ID", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 200, "GET /v1/events reads only ?after");
    for query in ["?limit=5", "?order=desc", "?before=3"] {
        let refused = app.get(&format!("/v1/events/stream{query}")).await;
        assert_eq!(refused.status(), 400, "{query}");
    }
    let mut open = LogStream::new(open);
    let stopping = tokio::spawn(app.stop());
    let last = open.next().await.unwrap();
    assert_eq!(last.event, "shutdown");
    assert!(open.next().await.is_none());
    stopping.await.unwrap();
}
