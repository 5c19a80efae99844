//! AI usage budgets (DESIGN §15): `budget` on a workflow and `limits.run_tokens` as the
//! default, summed from `ai_router.chat` usage, enforced before each such step, shown on
//! the run and counted in `orchestrator_ai_tokens_total`. Both stores.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::TestApp;
use crate::stores::{Store, on_both_stores, spawn_on};

on_both_stores!(
    a_strict_budget_fails_the_first_chat_step_that_starts_once_it_is_spent,
    a_warn_budget_logs_once_and_the_run_goes_on,
    the_server_default_applies_unless_the_workflow_sets_its_own_or_off,
);

/// An AI router whose every answer used 14 tokens of `gpt-test`.
async fn router() -> MockServer {
    let router = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cmpl-1",
            "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
        })))
        .mount(&router)
        .await;
    router
}

/// A workflow of three chat steps, one after the other, each retried up to twice.
fn three_asks(name: &str, budget: Option<Value>) -> Value {
    let ask = |n: u32| {
        json!({"name": format!("ask{n}"), "action": "ai_router.chat",
               "retry": {"max": 2, "backoff_ms": 10},
               "input": {"model": "gpt-test", "messages": [{"role": "user", "content": format!("question {n}")}]}})
    };
    let mut wf = json!({"name": name, "steps": [ask(1), ask(2), ask(3)]});
    if let Some(budget) = budget {
        wf["budget"] = budget;
    }
    wf
}

async fn asked(router: &MockServer) -> usize {
    router.received_requests().await.unwrap().len()
}

async fn tokens_metric(app: &TestApp, workflow: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let series =
        format!("orchestrator_ai_tokens_total{{model=\"gpt-test\",workflow=\"{workflow}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.parse().unwrap())
}

async fn a_strict_budget_fails_the_first_chat_step_that_starts_once_it_is_spent(store: Store) {
    let router = router().await;
    let uri = router.uri();
    let app = spawn_on(store, move |raw| raw.ai_router.base_url = uri).await;
    let wf = app
        .create_workflow(&three_asks(
            "budgeted",
            Some(json!({"tokens": 20, "mode": "strict"})),
        ))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "FAILED", "{done:#}");
    assert_eq!(done["budget"], json!({"tokens": 20, "mode": "strict"}));
    assert_eq!(done["usage"]["total_tokens"], 28, "two steps ran");
    assert_eq!(done["steps"][1]["status"], "SUCCEEDED");
    let refused = &done["steps"][2];
    assert_eq!(refused["status"], "FAILED");
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("28 tokens") && error.contains("budget of 20"),
        "{error}"
    );
    assert!(
        refused["attempts"].as_array().unwrap().is_empty(),
        "no attempt, so no retry: {refused}"
    );
    assert_eq!(asked(&router).await, 2);
    let log = app.logs(&run).await;
    let spent: Vec<&Value> = log
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("token budget spent")
        })
        .collect();
    assert_eq!(spent.len(), 1, "{log:#?}");
    assert_eq!(spent[0]["level"], "warn");
    assert_eq!(spent[0]["step"], "ask2");
    assert_eq!(tokens_metric(&app, "budgeted").await, 28.0);

    // A re-run keeps the budget and the usage so far: the refused step is refused again.
    let retried = app.post(&format!("/v1/runs/{run}/retry"), &json!({})).await;
    assert_eq!(retried.status(), 200);
    let again = app.wait_until_finished(&run).await;
    assert_eq!(again["status"], "FAILED");
    assert_eq!(asked(&router).await, 2);
}

async fn a_warn_budget_logs_once_and_the_run_goes_on(store: Store) {
    let router = router().await;
    let uri = router.uri();
    let app = spawn_on(store, move |raw| raw.ai_router.base_url = uri).await;
    let wf = app
        .create_workflow(&three_asks(
            "warned",
            Some(json!({"tokens": 20, "mode": "warn"})),
        ))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done:#}");
    assert_eq!(done["usage"]["total_tokens"], 42);
    assert_eq!(done["budget"]["mode"], "warn");
    assert_eq!(asked(&router).await, 3);
    let log = app.logs(&run).await;
    let spent = log
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("token budget spent")
        })
        .count();
    assert_eq!(spent, 1, "{log:#?}");
    assert_eq!(tokens_metric(&app, "warned").await, 42.0);
}

async fn the_server_default_applies_unless_the_workflow_sets_its_own_or_off(store: Store) {
    let router = router().await;
    let uri = router.uri();
    let app = spawn_on(store, move |raw| {
        raw.ai_router.base_url = uri;
        raw.limits.run_tokens = 10;
    })
    .await;
    let plain = app.create_workflow(&three_asks("plain", None)).await;
    let run = app.start_run(&plain, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(done["budget"], json!({"tokens": 10, "mode": "strict"}));
    assert_eq!(done["steps"][1]["status"], "FAILED", "14 tokens spent 10");

    let more = app
        .create_workflow(&three_asks("more", Some(json!({"tokens": 100}))))
        .await;
    let run = app.start_run(&more, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["budget"], json!({"tokens": 100, "mode": "strict"}));

    let off = app
        .create_workflow(&three_asks("free", Some(json!({"mode": "off"}))))
        .await;
    let run = app.start_run(&off, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert!(done.get("budget").is_none(), "{done}");

    for (budget, pointer) in [
        (json!({"tokens": 0}), "/budget/tokens"),
        (json!({"tokens": "many"}), "/budget/tokens"),
        (json!({"mode": "loose"}), "/budget/mode"),
        (json!({"tokens": 5, "limit": 1}), "/budget"),
    ] {
        let response = app
            .post("/v1/workflows", &three_asks("bad", Some(budget.clone())))
            .await;
        assert_eq!(response.status(), 400, "{budget}");
        let problem: Value = response.json().await.unwrap();
        let pointers: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert!(pointers.contains(&pointer), "{budget}: {problem}");
    }
}
