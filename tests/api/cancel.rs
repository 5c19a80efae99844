//! Cancel: in-flight calls are aborted (the downstream sees its connection close), the run
//! and its unfinished steps become CANCELED, and a terminal run cannot be canceled again.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::helpers::{PATIENCE, spawn_app};

#[derive(Debug, PartialEq)]
enum Seen {
    Request,
    Closed,
}

/// A downstream that reads each request and never answers, reporting when the caller
/// hangs up.
async fn hanging_server() -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(Seen::Closed);
                            return;
                        }
                        Ok(n) => {
                            seen.extend_from_slice(&buf[..n]);
                            if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                                seen.clear();
                                let _ = tx.send(Seen::Request);
                            }
                        }
                    }
                }
            });
        }
    });
    (address, rx)
}

#[tokio::test]
async fn cancel_aborts_an_in_flight_call_at_once() {
    let (downstream, mut seen) = hanging_server().await;
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&json!({"name": "stuck", "steps": [
            {"name": "before", "action": "transform", "input": {"value": 1}},
            {"name": "hang", "action": "http", "timeout_ms": 60000, "input": {"url": format!("{downstream}/hang")}},
            {"name": "never", "action": "transform", "input": {"value": 2}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let first = tokio::time::timeout(PATIENCE, seen.recv()).await.unwrap();
    assert_eq!(first, Some(Seen::Request));

    let asked = Instant::now();
    let response = app
        .post(&format!("/v1/runs/{run}/cancel"), &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    let canceled = app.wait_for_status(&run, "CANCELED").await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "canceled in {:?}",
        asked.elapsed()
    );
    let closed = tokio::time::timeout(Duration::from_secs(2), seen.recv())
        .await
        .unwrap();
    assert_eq!(
        closed,
        Some(Seen::Closed),
        "the downstream saw the call end"
    );

    let statuses: Vec<&str> = canceled["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["SUCCEEDED", "CANCELED", "CANCELED"]);
    assert!(
        canceled["error"]
            .as_str()
            .unwrap()
            .contains("canceled by anonymous")
    );
    assert_eq!(
        app.post(&format!("/v1/runs/{run}/cancel"), &json!({}))
            .await
            .status(),
        409
    );
}

#[tokio::test]
async fn a_parked_run_can_be_canceled() {
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&json!({"name": "parked", "steps": [
            {"name": "gate", "action": "transform", "requires_approval": true, "input": {"value": 1}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    let response = app
        .post(&format!("/v1/runs/{run}/cancel"), &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    let done = app.run(&run).await;
    assert_eq!(done["status"], "CANCELED");
    assert_eq!(done["steps"][0]["status"], "CANCELED");
    assert_eq!(
        app.post(&format!("/v1/runs/{run}/approve"), &json!({}))
            .await
            .status(),
        409
    );
    assert_eq!(
        app.post("/v1/runs/run_unknown/cancel", &json!({}))
            .await
            .status(),
        404
    );
}
