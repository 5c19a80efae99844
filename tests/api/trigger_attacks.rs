//! Triggers under attack: forged and truncated signatures, oversized bodies sent without a
//! length, a replayed delivery id with another body, hostile templates at creation and
//! hostile bodies against a light one, and a schedule firing every second that must not
//! spin the loop or pile up runs.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both::{Backend, both_stores, spawn_on};
use crate::helpers::{TestApp, spawn_app_with, wait_until};
use orchestrator::triggers::webhook::sign;

const SECRET: &str = "It's a Secret to Everybody";

const ECHO: &str = r#"{"id": "echo", "name": "echo", "steps": [
    {"name": "note", "action": "transform", "input": {"value": "{{ context.n }}"}}]}"#;

async fn trigger(app: &TestApp, body: Value) {
    let response = app.post("/v1/triggers", &body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

async fn deliver(
    app: &TestApp,
    name: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(app.url(&format!("/hooks/{name}")))
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

async fn run_count(app: &TestApp) -> usize {
    let page: Value = app.get("/v1/runs?limit=500").await.json().await.unwrap();
    page["items"].as_array().unwrap().len()
}

async fn metric(app: &TestApp, line: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn forged_signatures_and_oversized_bodies_store_nothing(backend: Backend) {
    let app = spawn_on(backend, |raw| raw.limits.body_bytes = 4096).await;
    app.create_workflow(&serde_json::from_str(ECHO).unwrap())
        .await;
    trigger(
        &app,
        json!({"name": "gh", "workflow_id": "echo", "secret": SECRET,
               "context": {"n": "{{ request.body.n }}"}}),
    )
    .await;
    let body = r#"{"n": 1}"#;
    let good = sign(SECRET, body.as_bytes());
    let upper = format!("sha256={}", good[7..].to_uppercase());
    let truncated = good[..good.len() - 2].to_owned();
    let padded = format!("{good}00");
    let other_body = sign(SECRET, b"{\"n\": 1}\n");
    for (what, signature) in [
        ("cut by one byte", truncated.as_str()),
        ("one byte too long", padded.as_str()),
        ("over another body", other_body.as_str()),
        ("empty hex", "sha256="),
        (
            "sha1 scheme",
            "sha1=0123456789abcdef0123456789abcdef01234567",
        ),
    ] {
        let refused = deliver(&app, "gh", body, &[("X-Hub-Signature-256", signature)]).await;
        assert_eq!(refused.status(), 401, "{what}");
    }
    // Hex in capitals is the same MAC.
    let accepted = deliver(&app, "gh", body, &[("X-Hub-Signature-256", &upper)]).await;
    assert_eq!(accepted.status(), 202);

    // Over the limit, with a length and streamed without one: 413 before the signature
    // is even looked at.
    let big = format!(r#"{{"n": "{}"}}"#, "x".repeat(5000));
    let signed_big = sign(SECRET, big.as_bytes());
    let with_length = deliver(
        &app,
        "gh",
        big.clone(),
        &[("X-Hub-Signature-256", &signed_big)],
    )
    .await;
    assert_eq!(with_length.status(), 413);
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(512)
        .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let without_length = deliver(
        &app,
        "gh",
        streamed,
        &[("X-Hub-Signature-256", &signed_big)],
    )
    .await;
    assert_eq!(without_length.status(), 413);
    assert_eq!(
        run_count(&app).await,
        1,
        "only the accepted delivery started a run"
    );
    assert_eq!(
        metric(
            &app,
            "orchestrator_webhook_deliveries_total{outcome=\"unauthorized\",trigger=\"gh\"}"
        )
        .await,
        5
    );
}

async fn a_replayed_delivery_id_answers_its_first_run_and_refuses_another_body(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    app.create_workflow(&serde_json::from_str(ECHO).unwrap())
        .await;
    trigger(
        &app,
        json!({"name": "gh", "workflow_id": "echo", "secret": SECRET,
               "context": {"n": "{{ request.body.n }}"}}),
    )
    .await;
    let send = |body: &'static str| {
        let signature = sign(SECRET, body.as_bytes());
        let app = &app;
        async move {
            deliver(
                app,
                "gh",
                body,
                &[
                    ("X-Hub-Signature-256", &signature),
                    ("X-GitHub-Delivery", "d-42"),
                ],
            )
            .await
        }
    };
    let first = send(r#"{"n": 1}"#).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    for _ in 0..3 {
        let replay = send(r#"{"n": 1}"#).await;
        assert_eq!(replay.status(), 200);
        assert_eq!(replay.json::<Value>().await.unwrap(), first);
    }
    let swapped = send(r#"{"n": 2}"#).await;
    assert_eq!(swapped.status(), 409);
    assert_eq!(run_count(&app).await, 1);
    let run = app.run(first["run_id"].as_str().unwrap()).await;
    assert_eq!(run["context"]["n"], 1);
}

both_stores!(
    forged_signatures_and_oversized_bodies_store_nothing,
    a_replayed_delivery_id_answers_its_first_run_and_refuses_another_body,
);

#[tokio::test]
async fn hostile_templates_are_refused_and_hostile_bodies_cannot_hurt_a_light_one() {
    let app = spawn_app_with(|raw| raw.limits.max_context_bytes = 4096).await;
    app.create_workflow(&serde_json::from_str(ECHO).unwrap())
        .await;
    let twenty = vec!["request.body"; 20].join(" ~ ");
    for (body, pointer) in [
        (
            json!({"filter": "range(1000000000) | length > 0"}),
            "/filter",
        ),
        (json!({"filter": "request.body * 100000000"}), "/filter"),
        (
            json!({"filter": "request.body | replace('a', 'aaaaaaaa') | length > 1"}),
            "/filter",
        ),
        (json!({"filter": twenty}), "/filter"),
        (
            json!({"context": {"n": "{% for i in range(99999999) %}x{% endfor %}"}}),
            "/context/n",
        ),
        (
            json!({"context": {"n": "{{ request.body ** 99 }}"}}),
            "/context/n",
        ),
        (
            json!({"context": {"n": "{{ context.secret }}"}}),
            "/context/n",
        ),
    ] {
        let mut body = body;
        body["name"] = json!("hostile");
        body["workflow_id"] = json!("echo");
        let response = app.post("/v1/triggers", &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    }

    trigger(
        &app,
        json!({"name": "light", "workflow_id": "echo",
               "context": {"n": "{{ request.body }}", "len": "{{ request.body | length }}"},
               "filter": "request.body | length > 0"}),
    )
    .await;
    // JSON nested far deeper than the parser goes is kept as text, not an error.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let nested = deliver(&app, "light", deep.clone(), &[]).await;
    assert_eq!(
        nested.status(),
        400,
        "200 000 bytes of text is over max_context_bytes"
    );
    let problem: Value = nested.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("max_context_bytes"),
        "{problem}"
    );
    let shallow = format!("{}{}", "[".repeat(500), "]".repeat(500));
    let accepted = deliver(&app, "light", shallow.clone(), &[]).await;
    assert_eq!(accepted.status(), 202);
    let run = app
        .run(
            accepted.json::<Value>().await.unwrap()["run_id"]
                .as_str()
                .unwrap(),
        )
        .await;
    assert_eq!(
        run["context"]["n"], shallow,
        "kept as text: deeper than the JSON parser goes"
    );
    // Bytes that are not UTF-8 are text with replacement characters.
    let binary = deliver(&app, "light", vec![0xff, 0xfe, 0x00, 0x41], &[]).await;
    assert_eq!(binary.status(), 202);
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn a_schedule_firing_every_second_keeps_one_run_and_does_not_spin_the_loop() {
    let app = spawn_app_with(|_| {}).await;
    app.create_workflow(&json!({"id": "slow", "name": "slow", "steps": [
        {"name": "gate", "action": "transform", "requires_approval": true, "input": {"value": 1}}]}))
        .await;
    let created = app
        .post(
            "/v1/schedules",
            &json!({"id": "hammer", "workflow_id": "slow", "cron": "* * * * * *"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let reads = "orchestrator_store_operation_duration_seconds_count{operation=\"due_schedules\"}";
    wait_until("the first scheduled run", || async {
        (run_count(&app).await == 1).then_some(())
    })
    .await;
    let (reads_before, skipped_before) = (
        metric(&app, reads).await,
        metric(
            &app,
            "orchestrator_schedule_fires_total{outcome=\"skipped\"}",
        )
        .await,
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reads_during = metric(&app, reads).await - reads_before;
    let skipped = metric(
        &app,
        "orchestrator_schedule_fires_total{outcome=\"skipped\"}",
    )
    .await
        - skipped_before;
    assert_eq!(
        run_count(&app).await,
        1,
        "overlap skip: the waiting run is the only one"
    );
    assert!((3..=5).contains(&skipped), "{skipped} ticks skipped in 4 s");
    // About one look at the store per tick, not a busy loop.
    assert!(
        reads_during <= 12,
        "{reads_during} reads of due schedules in 4 s"
    );
}
