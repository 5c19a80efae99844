use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_in, spawn_app_with};

fn sample() -> Value {
    json!({
        "name": "sample",
        "description": "two steps",
        "steps": [
            {"name": "fetch", "action": "http", "input": {"method": "GET", "url": "http://127.0.0.1:9/x"}},
            {"name": "keep", "action": "transform", "input": {"set": {"body": "{{ steps.fetch.output.body }}"}}}
        ]
    })
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body
}

fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|v| v["pointer"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn create_answers_201_with_version_1_and_reads_back() {
    let app = spawn_app().await;
    let response = app.post("/v1/workflows", &sample()).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("wf_"));
    assert_eq!(created["version"], 1);
    assert_eq!(created["steps"], sample()["steps"]);
    let read: Value = app
        .get(&format!("/v1/workflows/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read, created);
}

#[tokio::test]
async fn yaml_bodies_are_accepted_with_the_yaml_content_type() {
    let app = spawn_app().await;
    let yaml = "name: from-yaml\nsteps:\n  - name: a\n    action: transform\n    input:\n      set: {x: 1}\n";
    let response = app
        .client
        .post(app.url("/v1/workflows"))
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["steps"][0]["input"]["set"]["x"], 1);

    // The same body without the content type: a JSON syntax error that says what to do.
    for content_type in [None, Some("application/json")] {
        let mut request = app.client.post(app.url("/v1/workflows")).body(yaml);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400);
        let problem: Value = response.json().await.unwrap();
        let message = problem["errors"][0]["message"].as_str().unwrap();
        assert!(message.starts_with("invalid JSON"), "{message}");
        assert!(
            message.contains("send it with Content-Type: application/yaml"),
            "{message}"
        );
    }
    let broken = app
        .client
        .post(app.url("/v1/workflows"))
        .header("content-type", "application/json")
        .body("{\"name\": \"x\",}")
        .send()
        .await
        .unwrap();
    let problem: Value = broken.json().await.unwrap();
    assert!(!problem.to_string().contains("YAML"), "{problem}");
}

#[tokio::test]
async fn put_and_rollback_append_versions_newest_first() {
    let app = spawn_app().await;
    let id = app.create_workflow(&sample()).await;
    let mut v2 = sample();
    v2["description"] = json!("second");
    let response = app.put(&format!("/v1/workflows/{id}"), &v2).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["version"], 2);

    let response = app
        .post(
            &format!("/v1/workflows/{id}/rollback"),
            &json!({"version": 1}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let restored: Value = response.json().await.unwrap();
    assert_eq!(restored["version"], 3);
    assert_eq!(restored["restored_from"], 1);
    assert_eq!(restored["description"], "two steps");

    let versions: Value = app
        .get(&format!("/v1/workflows/{id}/versions"))
        .await
        .json()
        .await
        .unwrap();
    let numbers: Vec<u64> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1]);
    assert!(
        versions["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["created_at"].is_string())
    );

    let old: Value = app
        .get(&format!("/v1/workflows/{id}?version=2"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old["description"], "second");
    let latest: Value = app
        .get(&format!("/v1/workflows/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(latest["version"], 3);
}

#[tokio::test]
async fn concurrent_puts_never_share_a_version_number() {
    let app = spawn_app().await;
    let id = app.create_workflow(&sample()).await;
    let puts = (0..20).map(|i| {
        let mut body = sample();
        body["description"] = json!(format!("edit {i}"));
        let (client, url) = (app.client.clone(), app.url(&format!("/v1/workflows/{id}")));
        async move {
            client
                .put(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    let answers = futures::future::join_all(puts).await;
    let mut numbers: Vec<u64> = answers
        .iter()
        .map(|a| a["version"].as_u64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, (2..=21).collect::<Vec<_>>());
    let versions: Value = app
        .get(&format!("/v1/workflows/{id}/versions"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(versions["items"].as_array().unwrap().len(), 21);
}

#[tokio::test]
async fn lists_are_paged_with_a_cursor() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = sample();
        body["name"] = json!(format!("wf-{i}"));
        ids.push(app.create_workflow(&body).await);
    }
    let mut seen = Vec::new();
    let mut path = "/v1/workflows?limit=2".to_owned();
    loop {
        let page: Value = app.get(&path).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|w| w["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/workflows?limit=2&cursor={c}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");
    problem(app.get("/v1/workflows?limit=0").await, 400).await;
    problem(app.get("/v1/workflows?limit=abc").await, 400).await;
    problem(app.get("/v1/workflows?cursor=garbage").await, 400).await;
}

#[tokio::test]
async fn explicit_ids_are_kept_and_duplicates_conflict() {
    let app = spawn_app().await;
    let mut body = sample();
    body["id"] = json!("billing-sync");
    assert_eq!(app.create_workflow(&body).await, "billing-sync");
    let p = problem(app.post("/v1/workflows", &body).await, 409).await;
    assert!(p["detail"].as_str().unwrap().contains("billing-sync"));
    let versions: Value = app
        .get("/v1/workflows/billing-sync/versions")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        versions["items"].as_array().unwrap().len(),
        1,
        "nothing half-written"
    );
}

#[tokio::test]
async fn unknown_workflows_and_versions_are_404() {
    let app = spawn_app().await;
    problem(app.get("/v1/workflows/wf_nope").await, 404).await;
    problem(app.put("/v1/workflows/wf_nope", &sample()).await, 404).await;
    problem(app.get("/v1/workflows/wf_nope/versions").await, 404).await;
    let id = app.create_workflow(&sample()).await;
    problem(app.get(&format!("/v1/workflows/{id}?version=7")).await, 404).await;
    problem(
        app.post(
            &format!("/v1/workflows/{id}/rollback"),
            &json!({"version": 7}),
        )
        .await,
        404,
    )
    .await;
    problem(
        app.post(
            &format!("/v1/workflows/{id}/rollback"),
            &json!({"version": "one"}),
        )
        .await,
        400,
    )
    .await;
}

#[tokio::test]
async fn malformed_bodies_are_400_with_the_place() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/v1/workflows"))
        .header("content-type", "application/json")
        .body("{\"name\": \"x\", \"steps\": [")
        .send()
        .await
        .unwrap();
    let p = problem(response, 400).await;
    assert!(p["detail"].as_str().unwrap().contains("line 1"), "{p}");
    let response = app
        .client
        .post(app.url("/v1/workflows"))
        .header("content-type", "application/yaml")
        .body("name: [unclosed\n")
        .send()
        .await
        .unwrap();
    let p = problem(response, 400).await;
    assert!(
        p["errors"][0]["message"].as_str().unwrap().contains("YAML"),
        "{p}"
    );
    problem(app.post("/v1/workflows", &json!([1, 2])).await, 400).await;
}

#[tokio::test]
async fn oversized_bodies_are_413_and_store_nothing() {
    let app = spawn_app_with(|c| c.limits.body_bytes = 4096).await;
    let mut body = sample();
    body["description"] = json!("x".repeat(5000));
    problem(app.post("/v1/workflows", &body).await, 413).await;
    let list: Value = app.get("/v1/workflows").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn schema_violations_list_every_pointer_before_semantic_checks() {
    let app = spawn_app().await;
    let body = json!({"name": "w", "steps": [
        {"name": "a", "action": "http", "input": {"url": 5}, "retry": {"max": -1}},
        {"name": "a", "action": "http"}
    ]});
    let p = problem(app.post("/v1/workflows", &body).await, 400).await;
    let ptrs = pointers(&p);
    assert!(ptrs.contains(&"/steps/0/input/url".to_owned()), "{p}");
    assert!(ptrs.contains(&"/steps/0/retry/max".to_owned()), "{p}");
    assert!(ptrs.contains(&"/steps/1".to_owned()), "{p}");
    assert!(
        !p["detail"].as_str().unwrap().contains("duplicate"),
        "semantic checks wait for a valid schema"
    );
}

/// One failing example per semantic rule, each with the pointer it must report.
#[tokio::test]
async fn every_semantic_rule_reports_its_pointer() {
    let app = spawn_app().await;
    let t = |name: &str| json!({"name": name, "action": "transform", "input": {"value": 1}});
    let cases = [
        (json!([t("a"), t("a")]), "/steps/1/name", "duplicate"),
        (
            json!([{"name": "a", "action": "warp"}]),
            "/steps/0/action",
            "unknown action",
        ),
        (
            json!([{"name": "a", "action": "http", "input": {"url": "ftp://x/y"}}]),
            "/steps/0/input/url",
            "http",
        ),
        (
            json!([t("a"), {"name": "b", "action": "transform", "input": {"value": 1}, "depends_on": ["zz"]}]),
            "/steps/1/depends_on/0",
            "unknown step",
        ),
        (
            json!([{"name": "a", "action": "transform", "input": {"value": 1}, "depends_on": ["b"]},
                   {"name": "b", "action": "transform", "input": {"value": 1}, "depends_on": ["a"]}]),
            "/steps/0/depends_on",
            "cycle",
        ),
        (
            json!([{"name": "a", "action": "transform", "input": {"value": "{{ steps.b.output }}"}}, t("b")]),
            "/steps/0/input/value",
            "upstream",
        ),
        (
            json!([{"name": "a", "action": "transform", "input": {"value": "{{ nope.x }}"}}]),
            "/steps/0/input/value",
            "unknown variable",
        ),
        (
            json!([{"name": "a", "action": "transform", "input": {"value": "{{ 1 + }}"}}]),
            "/steps/0/input/value",
            "invalid template",
        ),
        (
            json!([{"name": "a", "action": "transform", "when": "steps.zz.status == 'x'", "input": {"value": 1}}]),
            "/steps/0/when",
            "unknown step",
        ),
        (
            json!([{"name": "a", "action": "http", "input": {"url": "http://x"}, "retry": {"max": 1000}}]),
            "/steps/0/retry/max",
            "limit",
        ),
        (
            json!([{"name": "a", "action": "http", "input": {"url": "http://x"}, "retry": {"backoff_ms": 9000, "max_backoff_ms": 100}}]),
            "/steps/0/retry/backoff_ms",
            "max_backoff_ms",
        ),
    ];
    for (steps, pointer, words) in cases {
        let body = json!({"name": "w", "steps": steps});
        let p = problem(app.post("/v1/workflows/validate", &body).await, 400).await;
        let hit = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["pointer"] == pointer);
        let hit = hit.unwrap_or_else(|| panic!("no violation at {pointer}: {p}"));
        assert!(
            hit["message"].as_str().unwrap().contains(words),
            "{pointer}: {p}"
        );
    }
    let list: Value = app.get("/v1/workflows").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]), "validate stores nothing");
}

#[tokio::test]
async fn validate_answers_valid_true_for_a_good_definition() {
    let app = spawn_app().await;
    let response = app.post("/v1/workflows/validate", &sample()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"valid": true})
    );
}

#[tokio::test]
async fn a_put_whose_body_names_another_id_is_refused() {
    let app = spawn_app().await;
    let id = app.create_workflow(&sample()).await;
    let mut body = sample();
    body["id"] = json!("someone-else");
    let p = problem(app.put(&format!("/v1/workflows/{id}"), &body).await, 400).await;
    assert_eq!(pointers(&p), ["/id"]);
    // Sending back what GET returned (with its read-only fields) is fine.
    let read: Value = app
        .get(&format!("/v1/workflows/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        app.put(&format!("/v1/workflows/{id}"), &read)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn workflows_and_all_versions_survive_a_restart() {
    let app = spawn_app().await;
    let id = app.create_workflow(&sample()).await;
    let mut v2 = sample();
    v2["description"] = json!("v2");
    app.put(&format!("/v1/workflows/{id}"), &v2).await;
    let before: Value = app
        .get(&format!("/v1/workflows/{id}/versions"))
        .await
        .json()
        .await
        .unwrap();
    let dir = app.stop().await;

    let app = spawn_app_in(dir, |_| {}).await;
    let after: Value = app
        .get(&format!("/v1/workflows/{id}/versions"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after, before);
}
