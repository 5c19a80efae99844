//! `/v1/triggers` and `POST /hooks/{name}`: signed deliveries (signatures computed here),
//! the rendered context and kept request, repeats, filters, refusals that store nothing,
//! and bad input at creation.

use serde_json::{Value, json};

use crate::both::{Backend, both_stores, spawn_on};
use crate::helpers::TestApp;
use orchestrator::triggers::webhook::sign;

const SECRET: &str = "It's a Secret to Everybody";

const ECHO: &str = r#"{"name": "echo", "steps": [
    {"name": "note", "action": "transform", "input": {"value": "{{ context.repo }}"}}]}"#;

async fn create_trigger(app: &TestApp, body: Value) -> Value {
    let response = app.post("/v1/triggers", &body).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

/// POSTs `body` to `/hooks/{name}` with `headers`.
async fn deliver(
    client: &reqwest::Client,
    app: &TestApp,
    name: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client
        .post(app.url(&format!("/hooks/{name}?env=prod")))
        .body(body.to_owned());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

/// Delivers `body` to trigger `name`, signed with [`SECRET`]; it must start a run (`202`),
/// whose id is returned.
async fn started_by_signed_delivery(app: &TestApp, name: &str, body: &str) -> String {
    let signature = sign(SECRET, body.as_bytes());
    let response = deliver(
        &app.client,
        app,
        name,
        body,
        &[("X-Hub-Signature-256", &signature)],
    )
    .await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn github_trigger(app: &TestApp) -> String {
    let wf = app
        .create_workflow(&serde_json::from_str(ECHO).unwrap())
        .await;
    let created = create_trigger(
        app,
        json!({"name": "github-push", "workflow_id": wf, "secret": SECRET,
               "context": {"repo": "{{ request.body.repository.full_name }}",
                           "event": "{{ request.headers['x-github-event'] }}",
                           "env": "{{ request.query.env }}", "raw": "{{ request.body }}"},
               "filter": "request.headers['x-github-event'] != 'ping'"}),
    )
    .await;
    assert_eq!(created["url"], "/hooks/github-push");
    assert_eq!(created["has_secret"], true);
    assert_eq!(created["secret_header"], "X-Hub-Signature-256");
    assert!(created.get("secret").is_none(), "{created}");
    wf
}

async fn a_signed_delivery_starts_a_run_once_per_delivery_id(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let wf = github_trigger(&app).await;
    let body = r#"{"ref": "refs/heads/main", "repository": {"full_name": "acme/site"}}"#;
    let signature = sign(SECRET, body.as_bytes());
    let headers = [
        ("X-Hub-Signature-256", signature.as_str()),
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("Content-Type", "application/json"),
    ];
    let first = deliver(&app.client, &app, "github-push", body, &headers).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let run_id = first["run_id"].as_str().unwrap().to_owned();
    let run = app.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["context"]["repo"], "acme/site");
    assert_eq!(run["context"]["event"], "push");
    assert_eq!(run["context"]["env"], "prod");
    assert_eq!(run["context"]["raw"]["ref"], "refs/heads/main");
    assert_eq!(run["steps"][0]["output"], "acme/site");
    let trigger = &run["trigger"];
    assert_eq!(trigger["type"], "webhook");
    assert_eq!(trigger["name"], "github-push");
    assert_eq!(trigger["delivery"], "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(
        trigger["request"]["body"]["repository"]["full_name"],
        "acme/site"
    );
    assert_eq!(trigger["request"]["headers"]["x-github-event"], "push");
    assert_eq!(trigger["request"]["headers"]["x-hub-signature-256"], "***");
    assert_eq!(trigger["request"]["query"]["env"], "prod");
    // GitHub's "redeliver": the same delivery id answers with the first run.
    let again = deliver(&app.client, &app, "github-push", body, &headers).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["run_id"], run_id);
    // A ping is filtered out.
    let ping = r#"{"zen": "Design for failure."}"#;
    let signature = sign(SECRET, ping.as_bytes());
    let filtered = deliver(
        &app.client,
        &app,
        "github-push",
        ping,
        &[
            ("X-Hub-Signature-256", &signature),
            ("X-GitHub-Event", "ping"),
        ],
    )
    .await;
    assert_eq!(filtered.status(), 200);
    assert_eq!(
        filtered.json::<Value>().await.unwrap(),
        json!({"run_id": null})
    );
    let runs: Value = app
        .get(&format!("/v1/runs?workflow_id={wf}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(runs["items"].as_array().unwrap().len(), 1);
    let text = app.get("/metrics").await.text().await.unwrap();
    for line in [
        "orchestrator_webhook_deliveries_total{outcome=\"started\",trigger=\"github-push\"} 1",
        "orchestrator_webhook_deliveries_total{outcome=\"duplicate\",trigger=\"github-push\"} 1",
        "orchestrator_webhook_deliveries_total{outcome=\"filtered\",trigger=\"github-push\"} 1",
    ] {
        assert!(text.contains(line), "missing {line}");
    }
}

async fn wrong_or_missing_signatures_are_refused_and_store_nothing(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let wf = github_trigger(&app).await;
    let body = r#"{"repository": {"full_name": "acme/site"}}"#;
    let forged = sign("another secret", body.as_bytes());
    let tampered = sign(SECRET, b"{}");
    for headers in [
        vec![],
        vec![("X-Hub-Signature-256", forged.as_str())],
        vec![("X-Hub-Signature-256", tampered.as_str())],
        vec![("X-Hub-Signature-256", "sha256=not-hex")],
        vec![("Authorization", "Bearer anything-at-all-0123")],
    ] {
        let response = deliver(&app.client, &app, "github-push", body, &headers).await;
        assert_eq!(response.status(), 401, "{headers:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let runs: Value = app
        .get(&format!("/v1/runs?workflow_id={wf}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(runs["items"].as_array().unwrap().is_empty(), "{runs}");
    let events: Value = app.get("/v1/events").await.json().await.unwrap();
    assert!(events["items"].as_array().unwrap().is_empty(), "{events}");
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains(
        "orchestrator_webhook_deliveries_total{outcome=\"unauthorized\",trigger=\"github-push\"} 5"
    ));
}

async fn a_body_that_is_not_json_is_text_and_a_failed_render_names_the_template(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let wf = app
        .create_workflow(&serde_json::from_str(ECHO).unwrap())
        .await;
    create_trigger(
        &app,
        json!({"name": "plain", "workflow_id": wf, "secret": SECRET,
               "context": {"repo": "{{ request.body }}"}}),
    )
    .await;
    let body = "repo=acme/site, not JSON";
    let run_id = started_by_signed_delivery(&app, "plain", body).await;
    assert_eq!(app.run(&run_id).await["context"]["repo"], body);
    // A NUL in a delivery (PostgreSQL's text cannot hold one) reaches the run as U+FFFD.
    let run_id = started_by_signed_delivery(&app, "plain", "repo=acme\0site").await;
    let ended = app.wait_until_finished(&run_id).await;
    assert_eq!(ended["status"], "SUCCEEDED", "{ended}");
    assert_eq!(ended["context"]["repo"], "repo=acme\u{FFFD}site");
    // So does the request kept with the run, which the trigger filter of the run list reads.
    assert_eq!(
        ended["trigger"]["request"]["body"], "repo=acme\u{FFFD}site",
        "{ended}"
    );
    let listed = app.get("/v1/runs?trigger=webhook").await;
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert!(listed.to_string().contains(&run_id), "{listed}");

    create_trigger(
        &app,
        json!({"name": "strict", "workflow_id": wf, "secret": SECRET,
               "context": {"repo": "{{ request.body.repository.full_name }}"}}),
    )
    .await;
    let body = r#"{"zen": "no repository here"}"#;
    let signature = sign(SECRET, body.as_bytes());
    let response = deliver(
        &app.client,
        &app,
        "strict",
        body,
        &[("X-Hub-Signature-256", &signature)],
    )
    .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["errors"][0]["pointer"], "/context/repo",
        "{problem}"
    );
}

async fn gitlab_tokens_and_oversized_bodies(backend: Backend) {
    let app = spawn_on(backend, |raw| raw.limits.body_bytes = 1024).await;
    let wf = app
        .create_workflow(&serde_json::from_str(ECHO).unwrap())
        .await;
    create_trigger(
        &app,
        json!({"name": "gitlab", "workflow_id": wf, "secret": "gl-shared-token",
               "secret_header": "X-Gitlab-Token",
               "context": {"repo": "{{ request.body.project.path_with_namespace }}"}}),
    )
    .await;
    let body = r#"{"project": {"path_with_namespace": "acme/api"}}"#;
    let ok = deliver(
        &app.client,
        &app,
        "gitlab",
        body,
        &[
            ("X-Gitlab-Token", "gl-shared-token"),
            ("X-Gitlab-Event-UUID", "e-1"),
        ],
    )
    .await;
    assert_eq!(ok.status(), 202);
    let run_id = ok.json::<Value>().await.unwrap()["run_id"].clone();
    let run = app.run(run_id.as_str().unwrap()).await;
    assert_eq!(run["trigger"]["delivery"], "e-1");
    assert_eq!(
        run["trigger"]["request"]["headers"]["x-gitlab-token"],
        "***"
    );
    let wrong = deliver(
        &app.client,
        &app,
        "gitlab",
        body,
        &[("X-Gitlab-Token", "guess")],
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(2000));
    let too_large = deliver(
        &app.client,
        &app,
        "gitlab",
        &big,
        &[("X-Gitlab-Token", "gl-shared-token")],
    )
    .await;
    assert_eq!(too_large.status(), 413);
}

#[tokio::test]
async fn a_trigger_without_a_secret_needs_an_admin_token() {
    let app = crate::auth::secured().await;
    let wf = app
        .create_workflow(&serde_json::from_str(ECHO).unwrap())
        .await;
    create_trigger(
        &app,
        json!({"name": "internal", "workflow_id": wf, "context": {"repo": "{{ request.body.repo }}"}}),
    )
    .await;
    let body = r#"{"repo": "acme/ops"}"#;
    let anonymous = reqwest::Client::new();
    let reader = TestApp::client_with_token(crate::auth::READER);
    assert_eq!(
        deliver(&anonymous, &app, "internal", body, &[])
            .await
            .status(),
        401
    );
    assert_eq!(
        deliver(&reader, &app, "internal", body, &[]).await.status(),
        403
    );
    assert_eq!(
        deliver(&app.client, &app, "internal", body, &[])
            .await
            .status(),
        202
    );
    // An unknown trigger does not reveal itself to a caller without a token.
    assert_eq!(
        deliver(&anonymous, &app, "nothing", body, &[])
            .await
            .status(),
        401
    );
    assert_eq!(
        deliver(&app.client, &app, "nothing", body, &[])
            .await
            .status(),
        404
    );
}

async fn bad_triggers_are_refused_with_the_pointer_and_names_are_unique(backend: Backend) {
    let app = spawn_on(backend, |_| {}).await;
    let wf = app
        .create_workflow(&serde_json::from_str(ECHO).unwrap())
        .await;
    for (body, pointer) in [
        (
            json!({"name": "t", "workflow_id": wf, "context": {"a": "{{ request.body. }}"}}),
            "/context/a",
        ),
        (
            json!({"name": "t", "workflow_id": wf, "context": {"a": "{{ secrets.TOKEN }}"}}),
            "/context/a",
        ),
        (
            json!({"name": "t", "workflow_id": wf, "context": "{{ request.body }}"}),
            "/context",
        ),
        (
            json!({"name": "t", "workflow_id": wf, "filter": "request.body =="}),
            "/filter",
        ),
        (
            json!({"name": "t", "workflow_id": "wf_nope"}),
            "/workflow_id",
        ),
        (json!({"name": "a/b", "workflow_id": wf}), "/name"),
        (json!({"workflow_id": wf}), "/name"),
        (
            json!({"name": "t", "workflow_id": wf, "secret_header": "X-Token"}),
            "/secret_header",
        ),
    ] {
        let response = app.post("/v1/triggers", &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let problem: Value = response.json().await.unwrap();
        let pointers: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert!(pointers.contains(&pointer), "{body}: {problem}");
    }
    let body = json!({"name": "once", "workflow_id": wf});
    create_trigger(&app, body.clone()).await;
    assert_eq!(app.post("/v1/triggers", &body).await.status(), 409);
    let listed: Value = app.get("/v1/triggers").await.json().await.unwrap();
    assert_eq!(listed["items"][0]["name"], "once");
    assert_eq!(listed["items"][0]["has_secret"], false);
    let deleted = app
        .client
        .delete(app.url("/v1/triggers/once"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get("/v1/triggers/once").await.status(), 404);
    assert_eq!(
        deliver(&app.client, &app, "once", "{}", &[]).await.status(),
        404
    );
}

both_stores!(
    a_signed_delivery_starts_a_run_once_per_delivery_id,
    wrong_or_missing_signatures_are_refused_and_store_nothing,
    a_body_that_is_not_json_is_text_and_a_failed_render_names_the_template,
    gitlab_tokens_and_oversized_bodies,
    bad_triggers_are_refused_with_the_pointer_and_names_are_unique,
);
