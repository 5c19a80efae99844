//! The console's shell and assets (served open, with strict security headers and cache
//! rules) and `/v1/whoami`, which the console reads to offer only what the role allows.
//! The console itself is driven in a browser by `tests/console/`.

use orchestrator::api::console::asset_path;
use serde_json::{Value, json};

use crate::auth::{ADMIN, READER, secured};
use crate::helpers::{TestApp, spawn_app};

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_shell_is_open_holds_no_data_and_allows_no_inline_code() {
    let app = secured().await;
    let response = reqwest::get(app.url("/")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    assert_eq!(header(&response, "cache-control"), "no-cache");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(header(&response, "referrer-policy"), "no-referrer");
    let csp = header(&response, "content-security-policy").to_owned();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(html.contains(&asset_path("app.js")), "{html}");
    assert!(!html.contains("<script>"), "no inline script");
    assert!(!html.contains("wf_") && !html.contains("run_"), "no data");
}

#[tokio::test]
async fn assets_are_served_under_their_version_and_cached_forever() {
    let app = secured().await;
    let client = reqwest::Client::new();
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let response = client.get(app.url(&asset_path(file))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{file}");
        assert!(
            header(&response, "content-type").starts_with(kind),
            "{file}"
        );
        assert_eq!(
            header(&response, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert!(!response.bytes().await.unwrap().is_empty());
    }
    let current = asset_path("app.js");
    let stale = current
        .replace("/console/", "/console/0")
        .replace("/app.js", "0/app.js");
    for path in [
        stale.as_str(),
        &asset_path("missing.js"),
        "/console/x/app.js",
    ] {
        let response = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let post = app.client.post(app.url("/")).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

async fn whoami(client: &reqwest::Client, app: &TestApp) -> (u16, Value) {
    let response = client.get(app.url("/v1/whoami")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn whoami_names_the_token_and_its_role() {
    let app = secured().await;
    let admin = whoami(&TestApp::client_with_token(ADMIN), &app).await;
    assert_eq!(admin, (200, json!({"name": "ops", "role": "admin"})));
    let reader = whoami(&TestApp::client_with_token(READER), &app).await;
    assert_eq!(reader, (200, json!({"name": "grafana", "role": "reader"})));
    let (status, _) = whoami(&reqwest::Client::new(), &app).await;
    assert_eq!(status, 401);

    let open = spawn_app().await;
    let anonymous = whoami(&reqwest::Client::new(), &open).await;
    assert_eq!(
        anonymous,
        (200, json!({"name": "anonymous", "role": "admin"}))
    );
}
