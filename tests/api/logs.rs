//! Run logs: reading, appending client lines, and following a run live over SSE.
//!
//! Runs are held open with an approval step rather than with sleeps: a run parks at the
//! gate, the test does what it needs while the stream is live, then approves.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{SseEvent, TestApp, log_entries, spawn_app, spawn_app_with};

/// Calls a downstream, waits for approval, checks the context, and finishes.
fn gated(downstream: &str) -> Value {
    json!({"name": "gated", "steps": [
        {"name": "fetch", "action": "http",
         "input": {"method": "GET", "url": format!("{downstream}/data")}},
        {"name": "gate", "action": "transform", "requires_approval": true,
         "input": {"set": {"approved": true}}},
        {"name": "check", "action": "condition",
         "input": {"key": "approved", "equals": true, "on_false": "fail"}},
        {"name": "done", "action": "transform",
         "input": {"set": {"n": "{{ steps.fetch.output.body.n }}"}}}
    ]})
}

async fn downstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/data"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"n": 7})))
        .mount(&server)
        .await;
    server
}

/// Starts a gated run and returns its id once it waits for approval.
async fn parked_run(app: &TestApp, server: &MockServer) -> String {
    let workflow = app.create_workflow(&gated(&server.uri())).await;
    let run = app.start_run(&workflow, json!({})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    run
}

fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).expect("event data is JSON")
}

/// The `log` event of the entry that parked the run (its `status` event came just before).
fn parked(event: &SseEvent) -> bool {
    event.event == "log"
        && data(event)["message"]
            .as_str()
            .unwrap()
            .starts_with("waiting for approval of")
}

fn seqs(entries: &[Value]) -> Vec<u64> {
    entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_run_is_streamed_from_its_start_to_end_with_every_status_change() {
    let app = spawn_app().await;
    let server = downstream().await;
    let run = parked_run(&app, &server).await;
    let mut stream = app.log_stream(&run, None).await;
    let mut events = stream.until(parked).await;
    app.approve(&run).await;
    events.extend(stream.until_end().await);

    let entries = log_entries(&events);
    app.wait_until_finished(&run).await;
    let stored = app.logs(&run).await;
    assert_eq!(entries, stored, "the stream carries exactly the stored log");
    assert_eq!(
        seqs(&entries),
        (1..=stored.len() as u64).collect::<Vec<_>>()
    );
    // Every status event is followed by the entry that announced it.
    for (i, e) in events.iter().enumerate() {
        if e.event == "status" {
            assert_eq!(
                events[i + 1].event,
                "log",
                "status at {i} precedes its entry"
            );
        }
    }
    let changes: Vec<String> = events
        .iter()
        .filter(|e| e.event == "status")
        .map(|e| {
            let d = data(e);
            match d["step"].as_str() {
                Some(step) => format!("{step} {}", d["step_status"].as_str().unwrap()),
                None => format!("run {}", d["run_status"].as_str().unwrap()),
            }
        })
        .collect();
    let expected = [
        "run RUNNING",
        "fetch RUNNING",
        "fetch SUCCEEDED",
        "gate WAITING_APPROVAL",
        "run WAITING_APPROVAL",
        "gate PENDING",
        "run RUNNING",
        "gate RUNNING",
        "gate SUCCEEDED",
        "check RUNNING",
        "check SUCCEEDED",
        "done RUNNING",
        "done SUCCEEDED",
        "run SUCCEEDED",
    ];
    assert_eq!(changes, expected);
    let end = events.last().unwrap();
    assert_eq!(
        data(end),
        json!({"run_status": "SUCCEEDED", "last_seq": stored.len()})
    );
    let fetched = entries
        .iter()
        .find(|e| e["step"] == "fetch" && e["message"].as_str().unwrap().contains("succeeded"))
        .unwrap();
    assert!(
        fetched["message"].as_str().unwrap().contains("HTTP 200"),
        "{fetched}"
    );
}

#[tokio::test]
async fn a_client_that_reconnects_with_last_event_id_gets_exactly_the_missing_entries() {
    let app = spawn_app().await;
    let server = downstream().await;
    let run = parked_run(&app, &server).await;

    // Halfway: three entries, then the client goes away.
    let mut first = app.log_stream(&run, None).await;
    let seen = log_entries(&first.until(|e| e.event == "log" && e.id == "3").await);
    drop(first);
    let posted = app.post_log_lines(&run, "while away 1\nwhile away 2").await;
    assert_eq!(posted.status(), 201);

    // Back while the run is still live; then it finishes.
    let mut second = app.log_stream(&run, Some(3)).await;
    let mut resumed = second
        .until(|e| e.event == "log" && e.data.contains("while away 2"))
        .await;
    app.approve(&run).await;
    resumed.extend(second.until_end().await);
    let resumed = log_entries(&resumed);

    app.wait_until_finished(&run).await;
    let stored = app.logs(&run).await;
    let mut together = seen.clone();
    together.extend(resumed.iter().cloned());
    assert_eq!(together, stored, "no entry lost or repeated");

    // Reconnecting after the end, by header or by ?after=, replays the same tail.
    let mut late = app.log_stream(&run, Some(3)).await;
    assert_eq!(log_entries(&late.until_end().await), resumed);
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{run}/logs/stream?after=3")))
        .send()
        .await
        .unwrap();
    let mut by_query = crate::helpers::LogStream::new(response);
    assert_eq!(log_entries(&by_query.until_end().await), resumed);
}

#[tokio::test]
async fn two_hundred_subscribers_receive_the_same_complete_sequence() {
    const SUBSCRIBERS: usize = 200;
    let app = Arc::new(spawn_app().await);
    let server = downstream().await;
    let run = parked_run(&app, &server).await;
    let live = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let (app, run, live) = (app.clone(), run.clone(), live.clone());
        readers.push(tokio::spawn(async move {
            let mut stream = app.log_stream(&run, None).await;
            let mut events = stream.until(parked).await;
            live.wait().await;
            events.extend(stream.until_end().await);
            log_entries(&events)
        }));
    }
    live.wait().await;
    for batch in 0..5 {
        let lines: Vec<String> = (0..20).map(|i| format!("batch {batch} line {i}")).collect();
        let response = app.post_log_lines(&run, &lines.join("\n")).await;
        assert_eq!(response.status(), 201);
    }
    app.approve(&run).await;
    app.wait_until_finished(&run).await;
    let stored = app.logs(&run).await;
    assert!(stored.len() > 100);
    for reader in readers {
        let entries = reader.await.unwrap();
        assert_eq!(seqs(&entries), seqs(&stored));
        assert_eq!(entries, stored);
    }
}

#[tokio::test]
async fn lines_posted_by_a_client_appear_in_the_stream_in_order() {
    let app = spawn_app().await;
    let server = downstream().await;
    let run = parked_run(&app, &server).await;
    let mut stream = app.log_stream(&run, None).await;
    stream.until(parked).await;

    let response = app
        .post_log_lines(&run, "first\r\nsecond\n\n  \nthird\n")
        .await;
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    let assigned: Vec<u64> = serde_json::from_value(answer["seqs"].clone()).unwrap();
    assert_eq!(assigned.len(), 3);
    assert_eq!(assigned[2], assigned[0] + 2);
    let events = stream
        .until(|e| e.event == "log" && e.data.contains("third"))
        .await;
    let lines = log_entries(&events);
    assert_eq!(seqs(&lines), assigned);
    let messages: Vec<&str> = lines
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["first", "second", "third"]);
    assert!(
        lines
            .iter()
            .all(|e| e["source"] == "client" && e["level"] == "info")
    );

    let canceled = app
        .post(&format!("/v1/runs/{run}/cancel"), &json!({}))
        .await;
    assert_eq!(canceled.status(), 200);
    let end = stream.until_end().await;
    assert_eq!(data(end.last().unwrap())["run_status"], "CANCELED");

    // Post-mortem notes on a finished run are kept, and a late stream replays them.
    let note = app
        .post_log_lines(&run, "post-mortem: downstream was fine")
        .await;
    assert_eq!(note.status(), 201);
    let stored = app.logs(&run).await;
    assert_eq!(
        stored.last().unwrap()["message"],
        "post-mortem: downstream was fine"
    );
    let mut late = app.log_stream(&run, None).await;
    assert_eq!(log_entries(&late.until_end().await), stored);
}

#[tokio::test]
async fn an_unknown_run_is_404_before_any_stream_starts() {
    let app = spawn_app().await;
    problem(app.log_stream_response("run_nope", None).await, 404).await;
    problem(app.get("/v1/runs/run_nope/logs").await, 404).await;
    problem(app.post_log_lines("run_nope", "hello").await, 404).await;
    let bad_id = app.log_stream_response("run_nope", None).await;
    assert_ne!(bad_id.headers()["content-type"], "text/event-stream");
}

/// A run of two local steps, finished.
async fn finished_run(app: &TestApp) -> String {
    let workflow = app
        .create_workflow(&json!({"name": "local", "steps": [
            {"name": "a", "action": "transform", "input": {"set": {"x": 1}}},
            {"name": "b", "action": "transform", "input": {"set": {"y": 2}}}
        ]}))
        .await;
    let run = app.start_run(&workflow, json!({})).await;
    app.wait_for_status(&run, "SUCCEEDED").await;
    run
}

#[tokio::test]
async fn the_log_pages_by_after_and_limit_and_reads_as_text() {
    let app = spawn_app().await;
    let run = finished_run(&app).await;
    let all = app.logs(&run).await;
    assert!(all.len() >= 6, "{all:?}");

    let page: Value = app
        .get(&format!("/v1/runs/{run}/logs?after=2&limit=2"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seqs(page["items"].as_array().unwrap()), [3, 4]);
    assert_eq!(page["next_after"], 4);
    problem(app.get(&format!("/v1/runs/{run}/logs?limit=0")).await, 400).await;
    problem(app.get(&format!("/v1/runs/{run}/logs?after=x")).await, 400).await;

    let text = app
        .client
        .get(app.url(&format!("/v1/runs/{run}/logs?limit=3")))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert!(
        text.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(text.headers()["next-after"], "3");
    let body = text.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 3);
    let ts = all[0]["ts"].as_str().unwrap();
    assert_eq!(
        lines[0],
        format!("{ts} info {}", all[0]["message"].as_str().unwrap())
    );
    let step_line = all.iter().position(|e| e["step"] == "a").unwrap();
    let full = app
        .client
        .get(app.url(&format!("/v1/runs/{run}/logs")))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = full.lines().nth(step_line).unwrap();
    assert!(line.contains(" info [a] "), "{line}");
}

#[tokio::test]
async fn client_appends_are_bounded_by_the_configured_limits() {
    let app = spawn_app_with(|c| {
        c.logs.body_bytes = 1024;
        c.logs.max_line_bytes = 64;
        c.logs.max_entries_per_run = 20;
    })
    .await;
    let run = finished_run(&app).await;
    let held = app.logs(&run).await.len();

    problem(app.post_log_lines(&run, &"x".repeat(2000)).await, 413).await;
    problem(app.post_log_lines(&run, "\n \n").await, 400).await;

    let long = app.post_log_lines(&run, &"y".repeat(100)).await;
    assert_eq!(long.status(), 201);
    assert_eq!(long.json::<Value>().await.unwrap()["truncated"], 1);
    let stored = app.logs(&run).await;
    let cut = stored.last().unwrap()["message"].as_str().unwrap();
    assert_eq!(
        cut,
        format!("{} [truncated from 100 bytes]", "y".repeat(64))
    );

    let warn = app
        .client
        .post(app.url(&format!("/v1/runs/{run}/logs?level=warn")))
        .body("careful")
        .send()
        .await
        .unwrap();
    assert_eq!(warn.status(), 201);
    assert_eq!(app.logs(&run).await.last().unwrap()["level"], "warn");
    let loud = app
        .client
        .post(app.url(&format!("/v1/runs/{run}/logs?level=loud")))
        .body("x")
        .send()
        .await
        .unwrap();
    problem(loud, 400).await;

    // The log is full at 20 entries: the oldest are kept, the newest refused whole.
    let free = 20 - (held + 2);
    let fill: Vec<String> = (0..free).map(|i| format!("fill {i}")).collect();
    assert_eq!(
        app.post_log_lines(&run, &fill.join("\n")).await.status(),
        201
    );
    let refused = problem(app.post_log_lines(&run, "one too many").await, 409).await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("at most 20 entries"),
        "{refused}"
    );
    assert_eq!(app.logs(&run).await.len(), 20);
}

#[tokio::test]
async fn a_failed_run_can_be_debugged_from_its_log_alone() {
    let app = spawn_app().await;
    let server = MockServer::start().await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"error": "overloaded"})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(500).set_body_string("database down"))
        .mount(&server)
        .await;
    let workflow = app
        .create_workflow(&json!({"name": "flaky", "steps": [
            {"name": "call", "action": "http", "retry": {"max": 1, "backoff_ms": 10},
             "input": {"url": format!("{}/flaky", server.uri())}}
        ]}))
        .await;
    let run = app.start_run(&workflow, json!({})).await;
    app.wait_for_status(&run, "FAILED").await;

    let text = app
        .client
        .get(app.url(&format!("/v1/runs/{run}/logs")))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let url = format!("{}/flaky", server.uri());
    let retry = format!(
        "warn [call] attempt 1 of 2 failed: POST {url}: HTTP 503; response: {{\"error\":\"overloaded\"}}; retrying in 10 ms"
    );
    let failed = format!(
        "error [call] failed: attempt 2 failed: POST {url}: HTTP 500 (gave up after 2 attempts); response: database down"
    );
    assert!(text.contains(&retry), "{text}");
    assert!(text.contains(&failed), "{text}");
    assert!(
        text.contains("error run failed: step \"call\" failed"),
        "{text}"
    );

    let mut stream = app.log_stream(&run, None).await;
    let events = stream.until_end().await;
    assert_eq!(data(events.last().unwrap())["run_status"], "FAILED");
}

#[tokio::test]
async fn an_idle_stream_sends_keep_alive_comments() {
    use futures::StreamExt;
    let app = spawn_app_with(|c| c.logs.keep_alive = std::time::Duration::from_millis(200)).await;
    let server = downstream().await;
    let run = parked_run(&app, &server).await;
    let mut body = app.log_stream_response(&run, None).await.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(crate::helpers::PATIENCE, async {
        while text.matches(": keep-alive").count() < 2 {
            let chunk = body.next().await.unwrap().unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("keep-alive comments while the run waits");
    assert!(
        text.contains("event: status"),
        "the backlog came first: {text}"
    );
}

#[tokio::test]
async fn resuming_after_an_entry_the_log_does_not_have_is_refused() {
    let app = spawn_app().await;
    let run = finished_run(&app).await;
    let last = app.logs(&run).await.len() as u64;
    let mut before_end = app.log_stream(&run, Some(last - 1)).await;
    let events = before_end.until_end().await;
    assert_eq!(log_entries(&events).len(), 1, "the last entry, then end");
    let at_end = app.log_stream_response(&run, Some(last)).await;
    assert_eq!(
        at_end.status(),
        204,
        "nothing more will come: EventSource stops"
    );
    problem(app.log_stream_response(&run, Some(last + 5)).await, 400).await;
    let bad = app
        .client
        .get(app.url(&format!("/v1/runs/{run}/logs/stream")))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    problem(bad, 400).await;
}

#[tokio::test]
async fn stopping_the_server_closes_open_streams_with_a_shutdown_event_not_end() {
    let app = spawn_app().await;
    let server = downstream().await;
    let run = parked_run(&app, &server).await;
    let mut stream = app.log_stream(&run, None).await;
    let seen = stream.until(parked).await;
    let last_seq = log_entries(&seen).last().unwrap()["seq"].clone();
    // Graceful shutdown would otherwise wait out its grace period for the open stream.
    tokio::time::timeout(std::time::Duration::from_secs(8), app.stop())
        .await
        .expect("the server stops without waiting for its open streams");
    let mut rest = Vec::new();
    while let Some(event) = stream.next().await {
        rest.push(event);
    }
    let last = rest.last().expect("a final event");
    assert_eq!(last.event, "shutdown", "{rest:?}");
    assert_eq!(
        data(last),
        json!({"run_status": "WAITING_APPROVAL", "last_seq": last_seq})
    );
    assert!(
        rest.iter().all(|e| e.event != "end"),
        "a stopped server does not claim the run ended"
    );
}

/// Reads `response`'s body chunk by chunk, as hyper hands it over, until `done` holds for
/// the text so far; returns the text and how many chunks it came in.
async fn read_chunks(response: reqwest::Response, done: impl Fn(&str) -> bool) -> (String, usize) {
    use futures::StreamExt;
    let mut body = response.bytes_stream();
    let (mut text, mut chunks) = (String::new(), 0);
    while !done(&text) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
            .await
            .expect("the stream goes on")
            .expect("the stream is open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        chunks += 1;
    }
    (text, chunks)
}

#[tokio::test]
async fn a_finished_runs_log_is_streamed_in_a_few_chunks_not_one_per_event() {
    let app = spawn_app().await;
    let steps: Vec<Value> = (0..15)
        .map(|i| json!({"name": format!("s{i}"), "action": "transform", "input": {"value": i}}))
        .collect();
    let workflow = app
        .create_workflow(&json!({"name": "fifteen", "steps": steps}))
        .await;
    let run = app.start_run(&workflow, json!({})).await;
    app.wait_for_status(&run, "SUCCEEDED").await;
    let response = app.log_stream_response(&run, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let (text, chunks) = read_chunks(response, |t| {
        t.contains("event: end") && t.ends_with("\n\n")
    })
    .await;
    let events = text.matches("\n\n").count();
    // 15 steps: ~33 log entries, each with its status event, and the end.
    assert!(events > 60, "{events} events:\n{text}");
    // A client like hyper wakes once per chunk: the backlog comes at once, not event by event.
    assert!(chunks <= 3, "{events} events came in {chunks} chunks");
    let entries = text.matches("event: log").count();
    assert_eq!(entries, app.logs(&run).await.len());
}

#[tokio::test]
async fn a_page_of_large_lines_ends_at_its_byte_bound_and_the_next_pages_hold_the_rest() {
    let app = spawn_app().await;
    let run = finished_run(&app).await;
    let line = "x".repeat(8000);
    for batch in 0..6 {
        let text: String = (0..100).map(|i| format!("{batch}.{i} {line}\n")).collect();
        let posted = app.post_log_lines(&run, &text).await;
        assert_eq!(posted.status(), 201);
    }
    let total = app.logs(&run).await.len();
    assert!(total > 600, "{total}");
    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page: Value = app
            .get(&format!("/v1/runs/{run}/logs?after={after}&limit=10000"))
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap();
        pages += 1;
        assert!(
            serde_json::to_vec(&page).unwrap().len() < 5 * 1024 * 1024,
            "page {pages} holds {} entries",
            items.len()
        );
        seen.extend(items.iter().map(|e| e["seq"].as_u64().unwrap()));
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert!(pages >= 2, "{pages} pages");
    assert_eq!(seen, (1..=total as u64).collect::<Vec<_>>());
}
