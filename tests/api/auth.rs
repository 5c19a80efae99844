//! Bearer tokens: every route but /health and /ready needs one when tokens are configured;
//! readers read, admins write; the token's name is recorded on what its holder did.

use orchestrator::api::{Access, ROUTES};
use orchestrator::config::RawToken;
use serde_json::{Value, json};

use crate::helpers::{ServerProcess, TestApp, spawn_app_with, wait_until, write_config};

pub const ADMIN: &str = "admin-token-0123456789";
pub const READER: &str = "reader-token-0123456789";
pub const WORKER: &str = "worker-token-0123456789";

/// A server with an `ops` admin token and a `grafana` reader token; its client sends the
/// admin token.
pub async fn secured() -> TestApp {
    let mut app = spawn_app_with(|raw| {
        raw.auth.tokens = vec![
            RawToken {
                name: "ops".into(),
                token: ADMIN.into(),
                role: "admin".into(),
            },
            RawToken {
                name: "grafana".into(),
                token: READER.into(),
                role: "reader".into(),
            },
            RawToken {
                name: "robot".into(),
                token: WORKER.into(),
                role: "worker".into(),
            },
        ];
    })
    .await;
    app.client = TestApp::client_with_token(ADMIN);
    app
}

/// Real ids for every path parameter, so that no route answers 404 for want of a resource.
pub struct Ids {
    pub workflow: String,
    pub run: String,
    pub template: String,
}

pub async fn fixtures(app: &TestApp) -> Ids {
    let workflow = app
        .create_workflow(&json!({"name": "gated", "steps": [
            {"name": "ship", "action": "transform", "requires_approval": true, "input": {"value": 1}}
        ]}))
        .await;
    let run = app.start_run(&workflow, json!({})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    let template = app
        .get("/v1/templates")
        .await
        .json::<Value>()
        .await
        .unwrap()["items"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let ids = Ids {
        workflow,
        run,
        template,
    };
    restore(app, &ids).await;
    ids
}

/// Creates the schedule `nightly` and the trigger `deploy` unless they exist (again, after
/// a test deleted them).
pub async fn restore(app: &TestApp, ids: &Ids) {
    let schedule = app
        .post(
            "/v1/schedules",
            &json!({"id": "nightly", "workflow_id": ids.workflow, "cron": "@daily", "paused": true}),
        )
        .await;
    assert!(matches!(schedule.status().as_u16(), 201 | 409));
    // Without a secret, so that an admin token is what delivers to it.
    let trigger = app
        .post(
            "/v1/triggers",
            &json!({"name": "deploy", "workflow_id": ids.workflow}),
        )
        .await;
    assert!(matches!(trigger.status().as_u16(), 201 | 409));
}

/// A route's path with its parameters filled in.
pub fn concrete(path: &str, ids: &Ids) -> String {
    if path == "/console/{version}/{file}" {
        return orchestrator::api::console::asset_path("app.js");
    }
    path.replace("/workflows/{id}", &format!("/workflows/{}", ids.workflow))
        .replace("/runs/{id}", &format!("/runs/{}", ids.run))
        .replace("/templates/{name}", &format!("/templates/{}", ids.template))
        .replace("/schedules/{id}", "/schedules/nightly")
        .replace("/triggers/{name}", "/triggers/deploy")
        .replace("/hooks/{name}", "/hooks/deploy")
        .replace("/tasks/{id}", "/tasks/task_01J00000000000000000000000")
}

async fn call(
    client: &reqwest::Client,
    app: &TestApp,
    method: &str,
    path: &str,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = client.request(method.clone(), app.url(path));
    if method == reqwest::Method::POST || method == reqwest::Method::PUT {
        request = request.json(&json!({}));
    }
    request.send().await.unwrap()
}

async fn assert_problem(response: reqwest::Response, status: u16, what: &str) {
    assert_eq!(response.status(), status, "{what}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    if status == 401 {
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status, "{what}");
}

#[tokio::test]
async fn every_route_but_health_and_ready_needs_a_valid_token() {
    let app = secured().await;
    let ids = fixtures(&app).await;
    let anonymous = reqwest::Client::new();
    let wrong = TestApp::client_with_token("not-a-token-0123456789");
    for route in ROUTES {
        let path = concrete(route.path, &ids);
        let what = format!("{} {path}", route.method);
        if route.access == Access::Open {
            let response = call(&anonymous, &app, route.method, &path).await;
            assert_eq!(response.status(), 200, "{what} is open");
            continue;
        }
        assert_problem(
            call(&anonymous, &app, route.method, &path).await,
            401,
            &what,
        )
        .await;
        assert_problem(call(&wrong, &app, route.method, &path).await, 401, &what).await;
    }
    let unknown = anonymous.get(app.url("/v1/nothing")).send().await.unwrap();
    assert_problem(unknown, 401, "unknown routes do not reveal themselves").await;
}

#[tokio::test]
async fn readers_read_stream_and_validate_but_only_admins_write() {
    let app = secured().await;
    let ids = fixtures(&app).await;
    let reader = TestApp::client_with_token(READER);
    for route in ROUTES.iter().filter(|r| r.access != Access::Open) {
        let path = concrete(route.path, &ids);
        let what = format!("{} {path}", route.method);
        let response = call(&reader, &app, route.method, &path).await;
        // The fixture trigger has no secret: deliveries to it need an admin token.
        if matches!(route.access, Access::Write | Access::Signed | Access::Work) {
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 403, "{what}: {body}");
            assert!(
                body["detail"].as_str().unwrap().contains("reader"),
                "{body}"
            );
        } else {
            let status = response.status();
            assert!(
                status != 401 && status != 403,
                "{what} refused a reader: {status}"
            );
        }
    }
    // Nothing a reader tried changed the parked run.
    assert_eq!(app.run(&ids.run).await["status"], "WAITING_APPROVAL");
    for route in ROUTES
        .iter()
        .filter(|r| matches!(r.access, Access::Write | Access::Signed))
    {
        let path = concrete(route.path, &ids);
        let status = call(&app.client, &app, route.method, &path).await.status();
        assert!(
            status != 401 && status != 403,
            "{} {path} refused an admin: {status}",
            route.method
        );
    }
}

/// `path` with its first letter, and the first letter of its last segment, written as
/// percent-escapes (`/v1/runs/x/cancel` → `/%761/runs/x/%63ancel`): the same route to the
/// router, which decodes them.
fn escaped(path: &str) -> String {
    let escape = |s: &str| match s.char_indices().find(|(_, c)| c.is_ascii_lowercase()) {
        Some((at, c)) => format!("{}%{:02X}{}", &s[..at], c as u32, &s[at + 1..]),
        None => s.to_owned(),
    };
    let first = escape(path);
    match first.rsplit_once('/') {
        Some((head, last)) if !last.is_empty() => format!("{head}/{}", escape(last)),
        _ => first,
    }
}

#[tokio::test]
async fn a_path_with_escaped_letters_is_held_to_its_routes_access() {
    let app = secured().await;
    let ids = fixtures(&app).await;
    let reader = TestApp::client_with_token(READER);
    let worker = TestApp::client_with_token(WORKER);
    for route in ROUTES.iter().filter(|r| r.access != Access::Open) {
        let path = escaped(&concrete(route.path, &ids));
        let what = format!("{} {path}", route.method);
        let status = call(&reader, &app, route.method, &path).await.status();
        if matches!(route.access, Access::Write | Access::Signed | Access::Work) {
            assert_eq!(status, 403, "{what} as a reader");
        } else {
            assert!(
                status != 401 && status != 403,
                "{what} refused a reader: {status}"
            );
        }
        if matches!(route.access, Access::Write | Access::Signed | Access::Read) {
            let status = call(&worker, &app, route.method, &path).await.status();
            assert_eq!(status, 403, "{what} as a worker");
        }
    }
    assert_eq!(app.run(&ids.run).await["status"], "WAITING_APPROVAL");
    assert_eq!(
        app.get(&format!("/v1/workflows/{}", ids.workflow))
            .await
            .status(),
        200,
        "the workflow was not archived"
    );
    let no_token = reqwest::Client::new();
    let path = escaped(&format!("/v1/runs/{}/cancel", ids.run));
    assert_problem(call(&no_token, &app, "post", &path).await, 401, &path).await;
}

#[tokio::test]
async fn workers_may_use_the_worker_api_and_read_queues_but_nothing_else() {
    let app = secured().await;
    let ids = fixtures(&app).await;
    let worker = TestApp::client_with_token(WORKER);
    for route in ROUTES.iter().filter(|r| r.access != Access::Open) {
        let path = concrete(route.path, &ids);
        let what = format!("{} {path}", route.method);
        let response = call(&worker, &app, route.method, &path).await;
        let status = response.status();
        // The fixture trigger has no secret: deliveries to it need an admin token.
        if matches!(route.access, Access::Read | Access::Write | Access::Signed) {
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 403, "{what}: {body}");
            assert!(
                body["detail"].as_str().unwrap().contains("worker"),
                "{body}"
            );
        } else {
            assert!(
                status != 401 && status != 403,
                "{what} refused a worker: {status}"
            );
        }
    }
    assert_eq!(app.run(&ids.run).await["status"], "WAITING_APPROVAL");
    let me: Value = worker
        .get(app.url("/v1/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me, json!({"name": "robot", "role": "worker"}));
}

#[tokio::test]
async fn a_reader_may_validate_and_follow_a_log_stream() {
    let app = secured().await;
    let ids = fixtures(&app).await;
    let reader = TestApp::client_with_token(READER);
    let valid = reader
        .post(app.url("/v1/workflows/validate"))
        .json(&json!({"name": "x", "steps": [{"name": "a", "action": "transform", "input": {"value": 1}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(valid.status(), 200);
    let stream = reader
        .get(app.url(&format!("/v1/runs/{}/logs/stream", ids.run)))
        .send()
        .await
        .unwrap();
    let mut stream = crate::helpers::LogStream::new(stream);
    let first = stream.next().await.unwrap();
    assert!(first.event == "log" || first.event == "status");
}

#[tokio::test]
async fn the_token_name_is_recorded_on_versions_approvals_and_cancels() {
    let app = secured().await;
    let ids = fixtures(&app).await;
    let workflow: Value = app
        .get(&format!("/v1/workflows/{}", ids.workflow))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(workflow["created_by"], "ops");
    let replaced: Value = app
        .put(
            &format!("/v1/workflows/{}", ids.workflow),
            &json!({"name": "gated", "steps": [
                {"name": "ship", "action": "transform", "requires_approval": true, "input": {"value": 2}}
            ]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(replaced["version"], 2);
    assert_eq!(replaced["created_by"], "ops");

    let approved = app.approve(&ids.run).await;
    assert_eq!(approved["approvals"][0]["by"], "ops");
    let done = app.wait_until_finished(&ids.run).await;
    assert_eq!(done["approvals"][0]["by"], "ops");
    let log = app.logs(&ids.run).await;
    assert!(
        log.iter()
            .any(|e| e["message"].as_str().unwrap().contains("approved by ops")),
        "{log:?}"
    );

    let second = app.start_run(&ids.workflow, json!({})).await;
    app.wait_for_status(&second, "WAITING_APPROVAL").await;
    let canceled: Value = app
        .post(&format!("/v1/runs/{second}/cancel"), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(canceled["status"], "CANCELED");
    assert!(
        canceled["error"]
            .as_str()
            .unwrap()
            .contains("canceled by ops"),
        "{canceled}"
    );
}

#[tokio::test]
async fn tokens_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "auth:\n  tokens:\n    - {name: ci, token: \"${ORCH_TEST_ADMIN_TOKEN}\", role: admin}\n",
    );
    let server = ServerProcess::start_with_env(
        &config,
        "-config",
        &[("ORCH_TEST_ADMIN_TOKEN", "from-the-environment-0123")],
    );
    let client = reqwest::Client::new();
    let url = format!("{}/v1/workflows", server.address);
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let ci = client
        .get(&url)
        .bearer_auth("from-the-environment-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(ci.status(), 200);
    drop(server);

    // The whole list as one override, in figment's inline syntax.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let server = ServerProcess::start_with_env(
        &config,
        "-config",
        &[(
            "ORCHESTRATOR_AUTH__TOKENS",
            "[{name=grafana,token=reader-from-env-0123,role=reader}]",
        )],
    );
    let url = format!("{}/v1/workflows", server.address);
    let reader = wait_until("the server to answer", || async {
        client
            .post(&url)
            .bearer_auth("reader-from-env-0123")
            .json(&json!({}))
            .send()
            .await
            .ok()
    })
    .await;
    assert_eq!(reader.status(), 403);
}
