//! Templates: the bundled pack, stored templates, and instantiation into workflows.

use serde_json::{Value, json};
use wiremock::matchers::{body_json, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_pack_lists_the_go_templates_and_more() {
    let app = spawn_app().await;
    let list: Value = app.get("/v1/templates").await.json().await.unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for name in [
        "intake_enrich_decide_act",
        "detect_classify_route",
        "reviewed_change",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    let one: Value = app
        .get("/v1/templates/detect_classify_route")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["source"], "pack");
    assert!(
        one["params"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("detect_url"))
    );
    assert_eq!(app.get("/v1/templates/nope").await.status(), 404);
}

#[tokio::test]
async fn instantiating_a_template_fills_params_and_the_workflow_runs() {
    let downstream = MockServer::start().await;
    Mock::given(path("/enrich"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"score": 0.9})))
        .expect(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/act"))
        .and(body_json(
            json!({"item": {"sku": "A1"}, "enrichment": {"score": 0.9}}),
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let response = app
        .post("/v1/workflows", &json!({
            "template": "intake_enrich_decide_act",
            "name": "enrich-orders",
            "params": {"enrich_url": format!("{}/enrich", downstream.uri()), "act_url": format!("{}/act", downstream.uri()), "threshold": 0.8}
        }))
        .await;
    assert_eq!(response.status(), 201);
    let wf: Value = response.json().await.unwrap();
    assert_eq!(wf["name"], "enrich-orders");
    assert_eq!(
        wf["steps"][2]["input"]["if"],
        "steps.enrich.output.body.score >= 0.8"
    );
    assert_eq!(wf["x-template"]["name"], "intake_enrich_decide_act");
    let run = app
        .start_run(wf["id"].as_str().unwrap(), json!({"item": {"sku": "A1"}}))
        .await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["steps"][3]["status"], "SUCCEEDED");
}

#[tokio::test]
async fn bad_template_params_are_400_with_pointers() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/workflows",
            &json!({"template": "detect_classify_route", "params": {"detect_url": 5}}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/params/detect_url") && pointers.contains(&"/params"),
        "{problem}"
    );
    let missing = app
        .post(
            "/v1/workflows",
            &json!({"template": "no_such", "params": {}}),
        )
        .await;
    assert_eq!(missing.status(), 404);
    let wrong = app
        .post(
            "/v1/workflows",
            &json!({"template": "detect_classify_route", "parms": {}}),
        )
        .await;
    assert_eq!(wrong.status(), 400);
}

#[tokio::test]
async fn stored_templates_are_checked_listed_and_instantiated() {
    let app = spawn_app().await;
    let template = json!({
        "name": "ping",
        "description": "GET a URL",
        "params": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string", "format": "uri"}}},
        "workflow": {"name": "ping", "steps": [{"name": "ping", "action": "http", "input": {"method": "GET", "url": "[[ params.url ]]"}}]}
    });
    let response = app.post("/v1/templates", &template).await;
    assert_eq!(response.status(), 201);
    assert_eq!(app.post("/v1/templates", &template).await.status(), 409);
    let mut clash = template.clone();
    clash["name"] = json!("reviewed_change");
    assert_eq!(app.post("/v1/templates", &clash).await.status(), 409);
    let mut broken = template.clone();
    broken["name"] = json!("broken");
    broken["workflow"]["steps"][0]["action"] = json!("teleport");
    let response = app.post("/v1/templates", &broken).await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/workflow/steps/0/action");
    let got: Value = app.get("/v1/templates/ping").await.json().await.unwrap();
    assert_eq!(got["source"], "stored");
    let response = app
        .post(
            "/v1/workflows",
            &json!({"template": "ping", "params": {"url": "http://127.0.0.1:1/x"}}),
        )
        .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn the_go_services_workflow_shaped_template_is_accepted_and_instantiated() {
    let app = spawn_app().await;
    let template = json!({
        "name": "go_ping",
        "description": "the Go form: the template is the workflow",
        "steps": [
            {"name": "ping", "action": "http", "input": {"method": "GET", "url": "[[ params.url ]]"}},
            {"name": "note", "action": "transform", "input": {"set": {"pinged": "{{ steps.ping.status }}"}}}
        ]
    });
    let response = app.post("/v1/templates", &template).await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let got: Value = app.get("/v1/templates/go_ping").await.json().await.unwrap();
    assert_eq!(got["steps"][0]["name"], "ping");
    assert_eq!(got["source"], "stored");
    let response = app
        .post(
            "/v1/workflows",
            &json!({"template": "go_ping", "name": "pinger", "params": {"url": "http://127.0.0.1:1/x"}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let wf: Value = response.json().await.unwrap();
    assert_eq!(wf["name"], "pinger");
    assert_eq!(wf["steps"][0]["input"]["url"], "http://127.0.0.1:1/x");
    assert_eq!(
        wf["steps"][1]["input"]["set"]["pinged"], "{{ steps.ping.status }}",
        "run-time templates are left alone"
    );
    // Without the parameter the placeholder has nothing to fill.
    let response = app
        .post(
            "/v1/workflows",
            &json!({"template": "go_ping", "params": {}}),
        )
        .await;
    assert_eq!(response.status(), 400);
    // A broken step of the Go form is pointed at where it is in the body.
    let mut broken = template.clone();
    broken["name"] = json!("go_broken");
    broken["steps"][0]["action"] = json!("teleport");
    let response = app.post("/v1/templates", &broken).await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["errors"][0]["pointer"], "/steps/0/action",
        "{problem}"
    );
}

/// An operator schema requiring every workflow name to start with `team-`.
fn team_schema(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("team.schema.json");
    let schema = json!({
        "type": "object",
        "required": ["name", "steps"],
        "properties": {"name": {"type": "string", "pattern": "^team-"}}
    });
    std::fs::write(&path, schema.to_string()).unwrap();
    path
}

#[tokio::test]
async fn an_operator_schema_never_stops_start_up_and_applies_to_instantiated_templates() {
    let dir = tempfile::tempdir().unwrap();
    let schema = team_schema(dir.path());
    let app = crate::helpers::spawn_app_in(dir, |raw| {
        raw.policy.workflow_schema = schema.display().to_string();
    })
    .await;
    let list: Value = app.get("/v1/templates").await.json().await.unwrap();
    assert!(
        !list["items"].as_array().unwrap().is_empty(),
        "the pack is served"
    );
    let params = json!({"enrich_url": "http://127.0.0.1:1/e", "act_url": "http://127.0.0.1:1/a"});
    let refused = app
        .post(
            "/v1/workflows",
            &json!({"template": "intake_enrich_decide_act", "params": params}),
        )
        .await;
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/name", "{problem}");
    let accepted = app
        .post(
            "/v1/workflows",
            &json!({"template": "intake_enrich_decide_act", "name": "team-enrich", "params": params}),
        )
        .await;
    assert_eq!(accepted.status(), 201);
    // A template stored through the API is checked against the operator's schema at once.
    let stored = app
        .post(
            "/v1/templates",
            &json!({"name": "mine", "steps": [{"name": "a", "action": "transform", "input": {"value": 1}}]}),
        )
        .await;
    assert_eq!(stored.status(), 400);
    let stored = app
        .post(
            "/v1/templates",
            &json!({"name": "team-mine", "steps": [{"name": "a", "action": "transform", "input": {"value": 1}}]}),
        )
        .await;
    assert_eq!(stored.status(), 201);
}
