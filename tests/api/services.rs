//! Service actions against real local HTTP servers standing in for the AI router, the web
//! service, the memory archive and the SCM: exact requests (method, path, configured
//! headers, `Idempotency-Key`, body), outputs flowing into later steps, usage totals, and
//! the ways a step can be refused or fail.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// The one request `server` received at `at`.
async fn the_request(server: &MockServer, at: &str) -> Request {
    let requests: Vec<Request> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == at)
        .collect();
    assert_eq!(requests.len(), 1, "requests to {at}: {requests:?}");
    requests.into_iter().next().unwrap()
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Asserts the request's method, configured auth header, idempotency key and JSON body.
fn assert_request(request: &Request, verb: &str, auth: (&str, &str), key: &str, body: Value) {
    assert_eq!(request.method.as_str(), verb, "{}", request.url);
    assert_eq!(header(request, auth.0), auth.1, "{}", request.url);
    assert_eq!(header(request, "idempotency-key"), key, "{}", request.url);
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(
        request.body_json::<Value>().unwrap(),
        body,
        "{}",
        request.url
    );
}

async fn answer(server: &MockServer, verb: &str, at: &str, status: u16, body: Value) {
    Mock::given(method(verb))
        .and(path(at))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(server)
        .await;
}

async fn post_workflow(app: &TestApp, definition: Value) -> (u16, Value) {
    let response = app.post("/v1/workflows", &definition).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn pointers(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect()
}

fn chain_workflow() -> Value {
    json!({"name": "research", "steps": [
        {"name": "ask", "action": "ai_router.chat", "input": {
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "Answer in two words."},
                {"role": "user", "content": "A topic about {{ context.topic }}?"}
            ],
            "temperature": 0.2
        }},
        {"name": "search", "action": "web.search", "input": {"query": "{{ steps.ask.output.content }}", "limit": 2}},
        {"name": "extract", "action": "web.extract", "input": {"url": "{{ steps.search.output.body.results[0].url }}", "format": "text"}},
        {"name": "remember", "action": "memarch.store_fact", "input": {
            "subject": "{{ context.topic }}", "fact": "{{ steps.extract.output.body.text }}", "tags": ["research"]
        }},
        {"name": "recall", "action": "memarch.search", "input": {"query": "{{ context.topic }}", "top_k": 1}},
        {"name": "comment", "action": "scm.call", "input": {
            "path": "/repos/acme/widgets/issues/{{ context.issue }}/comments",
            "body": {"body": "{{ steps.ask.output.content }}: {{ steps.recall.output.body.facts[0].id }}"}
        }}
    ]})
}

#[tokio::test]
async fn six_service_actions_chain_through_templates_with_exact_requests() {
    let (router, web, memarch, scm) = (
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
    );
    let completion = json!({
        "id": "cmpl-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "async runtimes"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
    });
    answer(&router, "POST", "/v1/chat/completions", 200, completion).await;
    let page = format!("{}/pages/tokio", web.uri());
    answer(
        &web,
        "POST",
        "/v1/search",
        200,
        json!({"results": [{"url": page}]}),
    )
    .await;
    answer(
        &web,
        "POST",
        "/v1/extract",
        200,
        json!({"text": "Tokio is a runtime."}),
    )
    .await;
    answer(&memarch, "POST", "/v1/facts", 201, json!({"id": "fact_1"})).await;
    answer(
        &memarch,
        "POST",
        "/v1/search",
        200,
        json!({"facts": [{"id": "fact_1"}]}),
    )
    .await;
    let comments = "/repos/acme/widgets/issues/7/comments";
    answer(&scm, "POST", comments, 201, json!({"id": 99})).await;

    let app = spawn_app_with(|raw| {
        let auth = |value: &str| [("Authorization".to_owned(), value.to_owned())].into();
        raw.ai_router.base_url = router.uri();
        raw.ai_router.headers = auth("Bearer router-token");
        raw.web.base_url = web.uri();
        raw.web.headers = [("X-Api-Key".to_owned(), "web-key".to_owned())].into();
        raw.memarch.base_url = memarch.uri();
        raw.memarch.headers = auth("Bearer memarch-token");
        raw.scm.base_url = format!("{}/", scm.uri());
        raw.scm.headers = auth("token scm-token");
        raw.hooks.memarch_path = String::new(); // hooks have their own tests
    })
    .await;
    let wf = app.create_workflow(&chain_workflow()).await;
    let run_id = app
        .start_run(&wf, json!({"topic": "rust", "issue": 7}))
        .await;
    let run = app.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run:#}");

    let key = |step: &str| format!("{run_id}/{step}");
    let router_auth = ("authorization", "Bearer router-token");
    let ask = the_request(&router, "/v1/chat/completions").await;
    let ask_body = json!({"model": "gpt-test", "temperature": 0.2, "messages": [
        {"role": "system", "content": "Answer in two words."},
        {"role": "user", "content": "A topic about rust?"}
    ]});
    assert_request(&ask, "POST", router_auth, &key("ask"), ask_body);
    let web_auth = ("x-api-key", "web-key");
    let search = the_request(&web, "/v1/search").await;
    let search_body = json!({"query": "async runtimes", "limit": 2});
    assert_request(&search, "POST", web_auth, &key("search"), search_body);
    let extract = the_request(&web, "/v1/extract").await;
    let extract_body = json!({"url": page, "format": "text"});
    assert_request(&extract, "POST", web_auth, &key("extract"), extract_body);
    let memarch_auth = ("authorization", "Bearer memarch-token");
    let fact = the_request(&memarch, "/v1/facts").await;
    let fact_body = json!({"subject": "rust", "fact": "Tokio is a runtime.", "tags": ["research"]});
    assert_request(&fact, "POST", memarch_auth, &key("remember"), fact_body);
    let recall = the_request(&memarch, "/v1/search").await;
    let recall_body = json!({"query": "rust", "top_k": 1});
    assert_request(&recall, "POST", memarch_auth, &key("recall"), recall_body);
    let comment = the_request(&scm, comments).await;
    let comment_body = json!({"body": "async runtimes: fact_1"});
    let scm_auth = ("authorization", "token scm-token");
    assert_request(&comment, "POST", scm_auth, &key("comment"), comment_body);

    let ask = &run["steps"][0];
    assert_eq!(ask["output"]["content"], "async runtimes");
    assert_eq!(ask["output"]["status"], 200);
    assert_eq!(ask["output"]["usage"]["total_tokens"], 14);
    assert_eq!(ask["http_code"], 200);
    assert_eq!(run["steps"][3]["http_code"], 201);
    assert_eq!(run["steps"][5]["output"]["body"], json!({"id": 99}));
    assert_eq!(
        run["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14})
    );
}

#[tokio::test]
async fn an_absolute_endpoint_overrides_the_target_and_keeps_credentials_home() {
    let (web, elsewhere) = (MockServer::start().await, MockServer::start().await);
    answer(
        &elsewhere,
        "POST",
        "/custom/search",
        200,
        json!({"results": []}),
    )
    .await;
    answer(
        &elsewhere,
        "GET",
        "/api/v3/repos/acme",
        200,
        json!({"name": "acme"}),
    )
    .await;
    let app = spawn_app_with(|raw| {
        raw.web.base_url = web.uri();
        raw.web.headers = [("Authorization".to_owned(), "Bearer web".to_owned())].into();
    })
    .await;
    // scm is not configured: its step is accepted because it names an endpoint.
    let wf = app
        .create_workflow(&json!({"name": "elsewhere", "steps": [
            {"name": "find", "action": "web.search", "input": {
                "endpoint": format!("{}/custom/search", elsewhere.uri()), "query": "q"
            }},
            {"name": "repo", "action": "scm.call", "input": {
                "method": "GET", "endpoint": format!("{}/api/v3/repos/acme", elsewhere.uri())
            }}
        ]}))
        .await;
    let run_id = app.start_run(&wf, json!({})).await;
    let run = app.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run:#}");
    assert!(web.received_requests().await.unwrap().is_empty());
    let find = the_request(&elsewhere, "/custom/search").await;
    assert_eq!(find.body_json::<Value>().unwrap(), json!({"query": "q"}));
    assert!(find.headers.get("authorization").is_none());
    let repo = the_request(&elsewhere, "/api/v3/repos/acme").await;
    assert_eq!(repo.method.as_str(), "GET");
    assert!(repo.body.is_empty());
    assert_eq!(run["steps"][1]["output"]["body"]["name"], "acme");
}

#[tokio::test]
async fn bad_service_input_is_refused_with_pointers() {
    let router = MockServer::start().await;
    let app = spawn_app_with(|raw| raw.ai_router.base_url = router.uri()).await;
    let step = |input: Value| json!({"name": "w", "steps": [{"name": "ask", "action": "ai_router.chat", "input": input}]});
    let messages = json!([{"role": "user", "content": "hi"}]);

    let (status, problem) = post_workflow(&app, step(json!({"messages": messages}))).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(pointers(&problem), ["/steps/0/input"]);
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("model")
    );

    let (status, problem) = post_workflow(&app, step(json!({"model": "m"}))).await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("messages")
    );

    let (status, problem) = post_workflow(&app, step(json!({"model": "m", "messages": []}))).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(pointers(&problem), ["/steps/0/input/messages"]);

    let input = json!({"model": "m", "messages": messages, "endpoint": "/v1/chat"});
    let (status, problem) = post_workflow(&app, step(input)).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(pointers(&problem), ["/steps/0/input/endpoint"]);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not an absolute URL")
    );

    let scm = json!({"name": "w", "steps": [{"name": "s", "action": "scm.call", "input": {"path": "https://evil.example/x"}}]});
    let (status, problem) = post_workflow(&app, scm).await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        pointers(&problem).contains(&"/steps/0/input/path"),
        "{problem}"
    );
}

#[tokio::test]
async fn an_unconfigured_service_is_refused_naming_the_config_key() {
    let app = spawn_app().await; // no services configured; the template pack still loads
    let templates: Value = app.get("/v1/templates").await.json().await.unwrap();
    assert!(!templates["items"].as_array().unwrap().is_empty());
    let wf = json!({"name": "w", "steps": [
        {"name": "t", "action": "transform", "input": {"set": {"q": "x"}}},
        {"name": "find", "action": "web.search", "input": {"query": "{{ context.q }}"}}
    ]});
    let (status, problem) = post_workflow(&app, wf).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(pointers(&problem), ["/steps/1/input"]);
    let message = problem["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("web.base_url is not configured"),
        "{message}"
    );
}

#[tokio::test]
async fn a_service_answering_invalid_json_fails_the_step_clearly() {
    let router = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("{\"choices\": [", "application/json"),
        )
        .mount(&router)
        .await;
    let web = MockServer::start().await;
    Mock::given(path("/v1/search"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>oops</html>", "text/html"))
        .mount(&web)
        .await;
    let app = spawn_app_with(|raw| {
        raw.ai_router.base_url = router.uri();
        raw.web.base_url = web.uri();
    })
    .await;
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    for (action, input, expected) in [
        ("ai_router.chat", chat, "invalid JSON"),
        ("web.search", json!({"query": "q"}), "not JSON"),
    ] {
        let wf = app
            .create_workflow(&json!({"name": "w", "steps": [
                {"name": "call", "action": action, "retry": {"max": 3, "backoff_ms": 1}, "input": input}
            ]}))
            .await;
        let run_id = app.start_run(&wf, json!({})).await;
        let run = app.wait_until_finished(&run_id).await;
        let step = &run["steps"][0];
        assert_eq!(run["status"], "FAILED", "{run:#}");
        assert!(
            step["error"].as_str().unwrap().contains(expected),
            "{step:#}"
        );
        // Not retried: a malformed answer does not get better by asking again.
        assert_eq!(step["attempts"].as_array().unwrap().len(), 1, "{step:#}");
    }
}

#[tokio::test]
async fn service_steps_retry_with_one_key_and_time_out_by_their_section() {
    let memarch = MockServer::start().await;
    Mock::given(path("/v1/facts"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&memarch)
        .await;
    answer(&memarch, "POST", "/v1/facts", 200, json!({"id": "f"})).await;
    let slow = ResponseTemplate::new(200).set_delay(Duration::from_secs(5));
    Mock::given(path("/v1/search"))
        .respond_with(slow)
        .mount(&memarch)
        .await;
    let app = spawn_app_with(|raw| {
        raw.memarch.base_url = memarch.uri();
        raw.memarch.timeout = Duration::from_millis(300);
        raw.hooks.memarch_path = String::new();
    })
    .await;
    let wf = app
        .create_workflow(&json!({"name": "w", "steps": [
            {"name": "store", "action": "memarch.store_fact", "retry": {"max": 2, "backoff_ms": 10}, "input": {"fact": "x"}},
            {"name": "find", "action": "memarch.search", "input": {"query": "x"}}
        ]}))
        .await;
    let run_id = app.start_run(&wf, json!({})).await;
    let run = app.wait_until_finished(&run_id).await;
    assert_eq!(run["steps"][0]["status"], "SUCCEEDED", "{run:#}");
    let stores: Vec<Request> = memarch
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == "/v1/facts")
        .collect();
    assert_eq!(stores.len(), 2);
    for request in &stores {
        assert_eq!(
            header(request, "idempotency-key"),
            format!("{run_id}/store")
        );
    }
    assert_eq!(run["status"], "FAILED");
    let error = run["steps"][1]["error"].as_str().unwrap();
    assert!(error.contains("timed out after 300 ms"), "{error}");
}
