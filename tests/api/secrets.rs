//! Secrets are declared, used only where they leave the server, as they are, and never
//! shown to a reader in any form a downstream might echo them in.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use wiremock::matchers::header;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{TestApp, spawn_app_with};

const KEY: &str = "sk-live-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "reader-token-0123456789";

async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.secrets.insert("API_KEY".into(), KEY.into());
        c.auth.tokens = vec![
            orchestrator::config::RawToken {
                name: "ops".into(),
                token: ADMIN.into(),
                role: "admin".into(),
            },
            orchestrator::config::RawToken {
                name: "viewer".into(),
                token: READER.into(),
                role: "reader".into(),
            },
        ];
    })
    .await
}

/// Submits `definition` as admin and returns the 400's violations.
async fn refused(app: &TestApp, definition: Value) -> Vec<(String, String)> {
    let admin = TestApp::client_with_token(ADMIN);
    let answer = admin
        .post(app.url("/v1/workflows"))
        .json(&definition)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400, "{definition}");
    let body: Value = answer.json().await.unwrap();
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["pointer"].as_str().unwrap().to_owned(),
                e["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn http_header(value: &str) -> Value {
    json!({"name": "w", "steps": [{"name": "call", "action": "http",
        "input": {"url": "http://127.0.0.1:1/", "headers": {"X-Key": value}}}]})
}

#[tokio::test]
async fn only_declared_secrets_resolve_never_the_servers_environment() {
    let app = app().await;
    for name in ["HOME", "ORCH_ADMIN_TOKEN", "PATH"] {
        let errors = refused(&app, http_header(&format!("{{{{ secrets.{name} }}}}"))).await;
        assert_eq!(errors[0].0, "/steps/0/input/headers/X-Key", "{errors:?}");
        assert!(errors[0].1.contains("not declared"), "{errors:?}");
    }
}

#[tokio::test]
async fn secrets_are_refused_outside_the_inputs_of_network_actions() {
    let app = app().await;
    let errors = refused(
        &app,
        json!({"name": "w", "steps": [{"name": "t", "action": "transform",
            "input": {"value": "{{ secrets.API_KEY }}"}}]}),
    )
    .await;
    assert_eq!(errors[0].0, "/steps/0/input/value");
    let errors = refused(
        &app,
        json!({"name": "w", "steps": [{"name": "t", "action": "transform",
            "input": {"set": {"k": "{{ secrets.API_KEY }}"}}}]}),
    )
    .await;
    assert_eq!(errors[0].0, "/steps/0/input/set/k");
    let errors = refused(
        &app,
        json!({"name": "w", "steps": [{"name": "c", "action": "http", "when": "secrets.API_KEY == 'x'",
            "input": {"url": "http://127.0.0.1:1/"}}]}),
    )
    .await;
    assert_eq!(errors[0].0, "/steps/0/when");
    let errors = refused(
        &app,
        json!({"name": "w", "steps": [{"name": "c", "action": "condition",
            "input": {"if": "secrets.API_KEY == 'x'"}}]}),
    )
    .await;
    assert_eq!(errors[0].0, "/steps/0/input/if");
}

#[tokio::test]
async fn a_secret_can_only_be_interpolated_as_it_is() {
    let app = app().await;
    for value in [
        "{{ secrets.API_KEY | upper }}",
        "{{ secrets.API_KEY | reverse }}",
        "{{ secrets.API_KEY[:12] }}",
        "{{ secrets.API_KEY | replace('-', '_') }}",
    ] {
        let errors = refused(&app, http_header(value)).await;
        assert_eq!(errors[0].0, "/steps/0/input/headers/X-Key", "{value}");
        assert!(errors[0].1.contains("as they are"), "{value}: {errors:?}");
    }
}

#[tokio::test]
async fn a_reader_never_sees_a_secret_a_downstream_echoes_in_any_encoding() {
    let app = app().await;
    let echoed = json!({
        "plain": format!("got {KEY}"),
        "basic": format!("Basic {}", STANDARD.encode(format!("user:{KEY}"))),
        "hex": hex::encode(KEY),
        "query": format!("https://x/?k={}", url::form_urlencoded::byte_serialize(KEY.as_bytes()).collect::<String>()),
    });
    let downstream = MockServer::start().await;
    Mock::given(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(echoed.clone()))
        .expect(1)
        .mount(&downstream)
        .await;
    let admin = TestApp::client_with_token(ADMIN);
    let created: Value = admin
        .post(app.url("/v1/workflows"))
        .json(
            &json!({"name": "echo", "steps": [{"name": "call", "action": "http", "input": {
            "method": "GET", "url": downstream.uri(),
            "headers": {"Authorization": "Bearer {{ secrets.API_KEY }}"}}}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run: Value = admin
        .post(app.url("/v1/runs"))
        .json(&json!({"workflow_id": created["id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap();
    let reader = TestApp::client_with_token(READER);
    let done: Value = crate::helpers::wait_until("the run to end", || async {
        let run: Value = reader
            .get(app.url(&format!("/v1/runs/{id}")))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (run["status"] == "SUCCEEDED").then_some(run)
    })
    .await;
    let logs = reader
        .get(app.url(&format!("/v1/runs/{id}/logs")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let seen = format!("{done}\n{logs}");
    for form in echoed.as_object().unwrap().values() {
        let form = form.as_str().unwrap();
        let tail = form.split_whitespace().last().unwrap();
        assert!(!seen.contains(tail), "{tail} is readable in {seen}");
    }
    assert!(!seen.contains(KEY));
    assert_eq!(done["steps"][0]["output"]["body"]["plain"], "got ***");
}
