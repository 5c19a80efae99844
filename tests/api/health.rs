use crate::helpers::spawn_app;
use serde_json::Value;

#[tokio::test]
async fn health_answers_ok_and_ready_checks_the_store() {
    let app = spawn_app().await;
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health, serde_json::json!({"status": "ok"}));
    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn the_server_endpoint_names_its_id_store_lease_and_retention() {
    let app = crate::helpers::spawn_app_with(|raw| {
        raw.server.id = "web-7".into();
        raw.retention.runs = std::time::Duration::ZERO;
    })
    .await;
    let server: Value = app.get("/v1/server").await.json().await.unwrap();
    assert_eq!(server["id"], "web-7");
    assert_eq!(server["store"], "sqlite");
    assert_eq!(server["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(server["ready"], true);
    assert_eq!(server["lease_ttl_ms"], 30_000);
    let retention = &server["retention"];
    assert_eq!(
        retention["runs_ms"],
        Value::Null,
        "0 keeps every run: {server}"
    );
    assert_eq!(retention["hook_events_ms"], 7 * 86_400_000_u64);
    assert_eq!(retention["interval_ms"], 60_000);
    assert_eq!(
        retention["deleted"],
        serde_json::json!({"runs": 0, "hook_events": 0})
    );
    assert_eq!(
        server["hooks"],
        serde_json::json!([]),
        "no hook targets: {server}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_problem_json() {
    let app = spawn_app().await;
    let response = app.get("/v2/nothing").await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let response = app
        .client
        .delete(app.url("/v1/workflows"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST, GET");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 405);
    // Under a prefix the routes are served in (a scope), as anywhere else.
    for path in [
        "/v1/runs/x/unknown",
        "/v1/runs/",
        "/v1/workflows/x/versions/y",
        "/v1/whoami/x",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let response = app
        .client
        .delete(app.url("/v1/runs/x/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}

async fn ready(app: &crate::helpers::TestApp) -> (u16, Value) {
    let response = app.get("/ready").await;
    let status = response.status().as_u16();
    if status == 503 {
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    (status, response.json().await.unwrap_or_default())
}

fn a_workflow() -> Value {
    serde_json::json!({"name": "w", "steps": [{"name": "a", "action": "transform", "input": {"value": 1}}]})
}

/// The embedded store refuses writes while another connection holds its write lock (as it
/// does when its disk is full: every commit fails). Readiness says so, and recovers by
/// itself once writes go through again.
#[tokio::test]
async fn ready_fails_while_the_embedded_store_refuses_writes_and_recovers_on_its_own() {
    let app = spawn_app().await;
    assert_eq!(ready(&app).await.0, 200);
    let blocker = rusqlite::Connection::open(app.dir.path().join("orchestrator.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let refused = app.post("/v1/workflows", &a_workflow()).await;
    assert_eq!(refused.status(), 503);
    let (status, problem) = ready(&app).await;
    assert_eq!(status, 503, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("refuses writes"), "{detail}");
    let server: Value = app.get("/v1/server").await.json().await.unwrap();
    assert_eq!(server["ready"], false, "{server}");
    assert!(
        server["reason"]
            .as_str()
            .unwrap()
            .contains("refuses writes"),
        "{server}"
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    crate::helpers::wait_until("readiness to recover", || async {
        (ready(&app).await.0 == 200).then_some(())
    })
    .await;
    let server: Value = app.get("/v1/server").await.json().await.unwrap();
    assert_eq!(server["ready"], true, "{server}");
    assert!(server.get("reason").is_none(), "{server}");
    assert_eq!(app.post("/v1/workflows", &a_workflow()).await.status(), 201);
}

/// Sets whether database `name` on the test cluster refuses writes, and ends its sessions
/// so that the server's pool reconnects under the new default.
async fn set_read_only(name: &str, read_only: bool) {
    let (client, connection) =
        tokio_postgres::connect(&crate::pg::admin_dsn(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = {read_only}"
        ))
        .await
        .unwrap();
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn ready_fails_while_postgresql_refuses_writes_and_recovers_on_its_own() {
    let dsn = crate::pg::fresh_database().await;
    let name = dsn.rsplit('/').next().unwrap().to_owned();
    let app = crate::helpers::spawn_app_with(|raw| raw.database.dsn = dsn.clone()).await;
    assert_eq!(ready(&app).await.0, 200);
    set_read_only(&name, true).await;
    // The server's connections were ended: the first requests may find them closed
    // ("connection closed") before the pool reconnects to a read-only database.
    crate::helpers::wait_until(
        "a write refused as read-only, and /ready saying so",
        || async {
            let refused = app.post("/v1/workflows", &a_workflow()).await.status() == 503;
            let (status, problem) = ready(&app).await;
            let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
            (refused && status == 503 && detail.contains("read-only")).then_some(())
        },
    )
    .await;
    set_read_only(&name, false).await;
    crate::helpers::wait_until("readiness to recover", || async {
        (ready(&app).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(app.post("/v1/workflows", &a_workflow()).await.status(), 201);
}

/// A client that keeps an idle connection for reuse (the CLI and the worker keep theirs
/// 30 s) finds it still open: the server does not close idle connections after actix's
/// default 5 s, which made a request sent at that moment fail.
#[tokio::test]
async fn an_idle_keep_alive_connection_still_serves_a_request_after_six_seconds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = b"GET /health HTTP/1.1\r\nHost: orchestrator\r\n\r\n";
    for round in 0..2 {
        if round == 1 {
            // Idle past the old keep-alive, on purpose: the duration is what is tested.
            tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        }
        socket.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.ends_with(b"}") {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut buf))
                .await
                .expect("an answer within 10 s")
                .unwrap();
            assert!(n > 0, "the server closed the connection (round {round})");
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
}
