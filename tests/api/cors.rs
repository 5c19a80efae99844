//! Browser access from other origins: preflights answered before the token check, the
//! CORS headers only for the origins in `server.cors.allowed_origins`, and event streams
//! that proxies do not buffer.

use orchestrator::config::RawToken;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example.net";
const TOKEN: &str = "cors-admin-token-0123456789";

/// A server with auth on that lets pages from [`APP`] call it.
async fn allowing_app() -> TestApp {
    let mut app = spawn_app_with(|raw| {
        raw.server.cors.allowed_origins = vec![APP.into()];
        raw.auth.tokens = vec![RawToken {
            name: "ops".into(),
            token: TOKEN.into(),
            role: "admin".into(),
        }];
    })
    .await;
    app.client = TestApp::client_with_token(TOKEN);
    app
}

/// A preflight as a browser sends it: no token, the method and headers it wants to use.
async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_listed_origin_gets_preflights_answered_without_a_token() {
    let app = allowing_app().await;
    let answer = preflight(&app, "/v1/runs/run_x/retry", APP, "POST").await;
    assert_eq!(answer.status(), 204);
    assert_eq!(header(&answer, "access-control-allow-origin"), Some(APP));
    assert_eq!(
        header(&answer, "access-control-allow-methods"),
        Some("POST, OPTIONS")
    );
    let allowed = header(&answer, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "authorization",
        "content-type",
        "last-event-id",
        "idempotency-key",
    ] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert_eq!(header(&answer, "access-control-max-age"), Some("600"));
    assert!(header(&answer, "vary").unwrap().contains("Origin"));
    assert!(
        header(&answer, "access-control-allow-credentials").is_none(),
        "tokens travel in a header, never cookies"
    );
    let methods = preflight(&app, "/v1/runs/run_1", APP, "DELETE").await;
    assert_eq!(
        header(&methods, "access-control-allow-methods"),
        Some("GET, DELETE, OPTIONS")
    );
}

#[tokio::test]
async fn answers_to_a_listed_origin_carry_its_cors_headers_errors_and_streams_included() {
    let app = allowing_app().await;
    let wf = app
        .create_workflow(&json!({"name": "c", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_until_finished(&run).await;
    let from_app = |path: &str| app.client.get(app.url(path)).header("Origin", APP).send();
    let answer = from_app("/v1/runs").await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(header(&answer, "access-control-allow-origin"), Some(APP));
    assert!(
        header(&answer, "access-control-expose-headers")
            .unwrap()
            .contains("X-Request-Id")
    );
    assert!(header(&answer, "vary").unwrap().contains("Origin"));

    let stream = from_app(&format!("/v1/runs/{run}/logs/stream"))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(header(&stream, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&stream, "x-accel-buffering"), Some("no"));
    assert!(
        header(&stream, "content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );

    // A page must be able to read why it was refused.
    let unauthorized = reqwest::Client::new()
        .get(app.url("/v1/runs"))
        .header("Origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(
        header(&unauthorized, "access-control-allow-origin"),
        Some(APP)
    );
}

#[tokio::test]
async fn a_foreign_origin_gets_no_cors_headers_and_its_preflights_are_refused() {
    let app = allowing_app().await;
    let answer = preflight(&app, "/v1/runs", EVIL, "POST").await;
    assert_eq!(answer.status(), 403);
    assert!(header(&answer, "access-control-allow-origin").is_none());
    assert!(header(&answer, "access-control-allow-methods").is_none());
    let problem: serde_json::Value = answer.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("server.cors.allowed_origins")
    );

    // The request itself is served as for curl (a browser withholds it from the page).
    let answer = app
        .client
        .get(app.url("/v1/runs"))
        .header("Origin", EVIL)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(header(&answer, "access-control-allow-origin").is_none());
    // Look-alike origins are other origins.
    for origin in [
        "https://app.example.com.evil.net",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
    ] {
        let answer = preflight(&app, "/v1/runs", origin, "GET").await;
        assert_eq!(answer.status(), 403, "{origin}");
    }
    // A preflight for a path the server does not have is a 401 like any unknown request.
    let answer = preflight(&app, "/v1/nowhere", APP, "GET").await;
    assert_eq!(answer.status(), 401);
}

#[tokio::test]
async fn without_allowed_origins_no_origin_gets_cors_headers() {
    let app = spawn_app().await;
    let answer = preflight(&app, "/v1/runs", APP, "POST").await;
    assert_eq!(answer.status(), 403);
    assert!(header(&answer, "access-control-allow-origin").is_none());
    let answer = app
        .client
        .get(app.url("/v1/runs"))
        .header("Origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(header(&answer, "access-control-allow-origin").is_none());
    // An OPTIONS that is no preflight is no method of any route.
    let plain = app
        .client
        .request(Method::OPTIONS, app.url("/v1/runs"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 405);
}

#[tokio::test]
async fn a_star_allows_any_origin_by_echoing_it() {
    let app = spawn_app_with(|raw| raw.server.cors.allowed_origins = vec!["*".into()]).await;
    let answer = preflight(&app, "/v1/workflows", EVIL, "POST").await;
    assert_eq!(answer.status(), 204);
    assert_eq!(header(&answer, "access-control-allow-origin"), Some(EVIL));
}

#[test]
fn origins_must_be_written_as_browsers_send_them() {
    use orchestrator::config::{Config, RawConfig};
    for (origin, ok) in [
        ("https://app.example.com", true),
        ("http://localhost:3000", true),
        ("*", true),
        ("https://app.example.com/", false),
        ("https://app.example.com/console", false),
        ("app.example.com", false),
        ("HTTPS://APP.example.com", false),
        ("ftp://files.example.com", false),
    ] {
        let mut raw = RawConfig::default();
        raw.server.cors.allowed_origins = vec![origin.into()];
        let result = Config::from_raw(std::path::Path::new("t.yaml"), raw);
        assert_eq!(result.is_ok(), ok, "{origin}");
        if let Err(e) = result {
            assert!(
                e.to_string().contains("server.cors.allowed_origins[0]"),
                "{e}"
            );
        }
    }
}
