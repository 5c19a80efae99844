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
}
