//! Runs: starting, scheduling (sequential and DAG), templating, conditions, skips,
//! idempotent starts and bad input.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{spawn_app, spawn_app_with};

fn statuses(run: &Value) -> Vec<&str> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_go_sample_workflow_runs_unchanged() {
    let downstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tickets"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"ticket": "T-1"})))
        .expect(1)
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let sample: Value =
        serde_json::from_str(&std::fs::read_to_string("examples/sample.json").unwrap()).unwrap();
    let mut sample = sample;
    sample["steps"][1]["input"]["url"] = json!(format!("{}/tickets", downstream.uri()));
    let wf = app.create_workflow(&sample).await;
    let run = app.start_run(&wf, json!({"priority": "high"})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["context"]["triaged"], true);
    assert_eq!(done["steps"][1]["http_code"], 201);
    assert_eq!(done["steps"][1]["output"]["body"]["ticket"], "T-1");
    for key in [
        "id",
        "workflow_id",
        "status",
        "current_step",
        "context",
        "steps",
        "created_at",
        "updated_at",
    ] {
        assert!(done.get(key).is_some(), "Go field {key} missing");
    }
    for key in [
        "step_id",
        "name",
        "action",
        "status",
        "attempts",
        "started_at",
        "finished_at",
    ] {
        assert!(
            done["steps"][0].get(key).is_some(),
            "step field {key} missing"
        );
    }
    assert_eq!(done["current_step"], 3);
}

#[tokio::test]
async fn a_linear_chain_passes_data_by_templates() {
    let downstream = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/users/ada"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": 7, "tags": ["x", "y"]})),
        )
        .expect(1)
        .mount(&downstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .and(body_json(
            json!({"user": 7, "tags": ["x", "y"], "note": "for ada (7)"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"order": "o-1"})))
        .expect(1)
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let base = downstream.uri();
    let wf = app
        .create_workflow(&json!({"name": "chain", "steps": [
            {"name": "user", "action": "http", "input": {"method": "GET", "url": format!("{base}/users/{{{{ context.login }}}}")}},
            {"name": "order", "action": "http", "input": {"url": format!("{base}/orders"), "body": {
                "user": "{{ steps.user.output.body.id }}",
                "tags": "{{ steps.user.output.body.tags }}",
                "note": "for {{ context.login }} ({{ steps.user.output.body.id }})"
            }}},
            {"name": "summary", "action": "transform", "input": {"set": {"order": "{{ steps.order.output.body.order }}"}}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({"login": "ada"})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["context"]["order"], "o-1");
    let requests = downstream.received_requests().await.unwrap();
    let order = requests.iter().find(|r| r.url.path() == "/orders").unwrap();
    assert_eq!(
        order.headers["idempotency-key"],
        format!("{run}/order").as_str()
    );
}

#[tokio::test]
async fn fan_out_branches_overlap_and_the_join_runs_once() {
    let downstream = MockServer::start().await;
    let slow = ResponseTemplate::new(200)
        .set_body_json(json!({"ok": true}))
        .set_delay(Duration::from_millis(400));
    Mock::given(path("/b"))
        .respond_with(slow.clone())
        .expect(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/c"))
        .respond_with(slow)
        .expect(1)
        .mount(&downstream)
        .await;
    Mock::given(path("/d"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let url = |p: &str| format!("{}{p}", downstream.uri());
    let wf = app
        .create_workflow(&json!({"name": "fan", "steps": [
            {"name": "a", "action": "transform", "input": {"set": {"go": true}}},
            {"name": "b", "action": "http", "depends_on": ["a"], "input": {"url": url("/b")}},
            {"name": "c", "action": "http", "depends_on": ["a"], "input": {"url": url("/c")}},
            {"name": "d", "action": "http", "depends_on": ["b", "c"], "input": {"url": url("/d"), "body": {
                "b": "{{ steps.b.output.body.ok }}", "c": "{{ steps.c.output.body.ok }}"}}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let at = |i: usize, f: &str| {
        chrono::DateTime::parse_from_rfc3339(done["steps"][i][f].as_str().unwrap()).unwrap()
    };
    assert!(
        at(1, "started_at") < at(2, "finished_at") && at(2, "started_at") < at(1, "finished_at"),
        "b and c overlap: {done}"
    );
    assert!(
        at(3, "started_at") >= at(1, "finished_at") && at(3, "started_at") >= at(2, "finished_at")
    );
}

#[tokio::test]
async fn when_skips_a_step_and_a_step_whose_parents_all_skipped() {
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&json!({"name": "skips", "steps": [
            {"name": "a", "action": "transform", "input": {"set": {"mode": "dry"}}},
            {"name": "b", "action": "transform", "when": "context.mode == 'live'", "input": {"value": 1}},
            {"name": "c", "action": "transform", "depends_on": ["b"], "input": {"value": 2}},
            {"name": "d", "action": "transform", "depends_on": ["a", "b"], "input": {"value": 3}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(
        statuses(&done),
        ["SUCCEEDED", "SKIPPED", "SKIPPED", "SUCCEEDED"]
    );
}

#[tokio::test]
async fn on_failure_continue_keeps_the_run_going() {
    let downstream = MockServer::start().await;
    Mock::given(path("/broken"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&json!({"name": "tolerant", "steps": [
            {"name": "optional", "action": "http", "on_failure": "continue", "input": {"url": format!("{}/broken", downstream.uri())}},
            {"name": "after", "action": "transform", "input": {"set": {"saw": "{{ steps.optional.status }}", "code": "{{ steps.optional.http_code }}"}}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(statuses(&done), ["FAILED", "SUCCEEDED"]);
    assert_eq!(done["context"], json!({"saw": "FAILED", "code": 400}));
}

#[tokio::test]
async fn a_failed_step_fails_the_run_and_skips_the_rest() {
    let downstream = MockServer::start().await;
    Mock::given(path("/gone"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": "no"})))
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&json!({"name": "strict", "steps": [
            {"name": "a", "action": "http", "input": {"url": format!("{}/gone", downstream.uri())}},
            {"name": "b", "action": "transform", "input": {"value": 1}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(statuses(&done), ["FAILED", "SKIPPED"]);
    assert_eq!(done["steps"][0]["http_code"], 404);
    assert_eq!(
        done["steps"][0]["output"]["body"]["error"], "no",
        "the failed answer is kept"
    );
    assert!(
        done["error"].as_str().unwrap().contains("HTTP 404"),
        "{done}"
    );
    assert_eq!(done["current_step"], 2);
}

#[tokio::test]
async fn conditions_stop_fail_or_continue() {
    let app = spawn_app().await;
    let make = |on_false: &str| {
        json!({"name": format!("cond-{on_false}"), "steps": [
            {"name": "check", "action": "condition", "input": {"key": "tier", "equals": "gold", "on_false": on_false}},
            {"name": "next", "action": "transform", "input": {"value": 1}}
        ]})
    };
    let mut results = Vec::new();
    for on_false in ["stop", "fail", "continue"] {
        let wf = app.create_workflow(&make(on_false)).await;
        let run = app.start_run(&wf, json!({"tier": "tin"})).await;
        results.push(app.wait_until_finished(&run).await);
    }
    assert_eq!(
        (results[0]["status"].as_str(), statuses(&results[0])),
        (Some("SUCCEEDED"), vec!["SUCCEEDED", "SKIPPED"])
    );
    assert_eq!(
        (results[1]["status"].as_str(), statuses(&results[1])),
        (Some("FAILED"), vec!["FAILED", "SKIPPED"])
    );
    assert_eq!(
        (results[2]["status"].as_str(), statuses(&results[2])),
        (Some("SUCCEEDED"), vec!["SUCCEEDED", "SUCCEEDED"])
    );
    let wf = app
        .create_workflow(&json!({"name": "cond-if", "steps": [
            {"name": "check", "action": "condition", "input": {"if": "context.n > 2", "on_false": "fail"}},
            {"name": "next", "action": "transform", "input": {"value": "{{ steps.check.output.result }}"}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({"n": 3})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["steps"][1]["output"], true);
}

#[tokio::test]
async fn a_template_failing_at_run_time_fails_the_step_naming_the_expression() {
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&json!({"name": "bad-template", "steps": [
            {"name": "a", "action": "transform", "input": {"value": "{{ context.customer.email }}"}}
        ]}))
        .await;
    let run = app
        .start_run(&wf, json!({"customer": "not an object"}))
        .await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "FAILED");
    let error = done["steps"][0]["error"].as_str().unwrap();
    assert!(error.contains("context.customer.email"), "{error}");
}

#[tokio::test]
async fn secrets_reach_the_downstream_but_are_never_stored() {
    let downstream = MockServer::start().await;
    Mock::given(header("authorization", "Bearer s3cr3t-value"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"echo": "token was s3cr3t-value"})),
        )
        .expect(1)
        .mount(&downstream)
        .await;
    let app = spawn_app_with(|c| {
        c.secrets
            .insert("ORCH_TEST_TOKEN".into(), "s3cr3t-value".into());
    })
    .await;
    let wf = app
        .create_workflow(&json!({"name": "secret", "steps": [
            {"name": "call", "action": "http", "input": {"url": downstream.uri(), "headers": {"Authorization": "Bearer {{ secrets.ORCH_TEST_TOKEN }}"}}},
            {"name": "keep", "action": "transform", "input": {"set": {"echo": "{{ steps.call.output.body.echo }}"}}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let text = done.to_string();
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(text.contains("token was ***"), "{text}");
}

#[tokio::test]
async fn a_run_pins_the_version_it_started_on() {
    let app = spawn_app().await;
    let v1 = json!({"name": "pinned", "steps": [
        {"name": "gate", "action": "transform", "requires_approval": true, "input": {"set": {"version": 1}}}
    ]});
    let wf = app.create_workflow(&v1).await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    let mut v2 = v1.clone();
    v2["steps"][0]["input"]["set"]["version"] = json!(2);
    assert_eq!(
        app.put(&format!("/v1/workflows/{wf}"), &v2).await.status(),
        200
    );
    app.post(&format!("/v1/runs/{run}/approve"), &json!({}))
        .await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["workflow_version"], 1);
    assert_eq!(done["context"]["version"], 1);
}

#[tokio::test]
async fn an_idempotency_key_starts_one_run_even_under_concurrent_repeats() {
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&json!({"name": "once", "steps": [{"name": "a", "action": "transform", "input": {"value": 1}}]}))
        .await;
    let body = json!({"workflow_id": wf, "context": {"order": 42}});
    let starts = (0..20).map(|_| {
        let request = app
            .client
            .post(app.url("/v1/runs"))
            .header("Idempotency-Key", "order-42")
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        }
    });
    let answers = futures::future::join_all(starts).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, id)| (*s == 201 || *s == 200) && *id == answers[0].1)
    );
    // Same key, same content in another key order: the same run.
    let reordered = json!({"context": {"order": 42}, "workflow_id": wf});
    let again = app
        .client
        .post(app.url("/v1/runs"))
        .header("Idempotency-Key", "order-42")
        .json(&reordered)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let other = json!({"workflow_id": wf, "context": {"order": 43}});
    let conflict = app
        .client
        .post(app.url("/v1/runs"))
        .header("Idempotency-Key", "order-42")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), 409);
    let runs: Value = app
        .get(&format!("/v1/runs?workflow_id={wf}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(runs["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_run_requests_are_refused_with_the_place() {
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&json!({"name": "x", "steps": [{"name": "a", "action": "transform", "input": {"value": 1}}]}))
        .await;
    let cases = [
        (json!({"workflow_id": "wf_missing"}), 404, ""),
        (json!({"workflow_id": wf, "version": 9}), 404, ""),
        (json!({"workflow_id": wf, "context": [1]}), 400, "/context"),
        (json!({"workflow_id": wf, "version": "1"}), 400, "/version"),
        (json!({"context": {}}), 400, "/workflow_id"),
        (json!({"workflow_id": wf, "contxt": {}}), 400, "/contxt"),
    ];
    for (body, status, pointer) in cases {
        let response = app.post("/v1/runs", &body).await;
        assert_eq!(response.status(), status, "{body}");
        let problem: Value = response.json().await.unwrap();
        if !pointer.is_empty() {
            assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
        }
    }
    assert_eq!(app.get("/v1/runs/run_nope").await.status(), 404);
    assert_eq!(app.get("/v1/runs?status=SLEEPING").await.status(), 400);
}

#[tokio::test]
async fn runs_are_listed_newest_first_with_filters_and_paging() {
    let app = spawn_app().await;
    let gate = json!({"name": "gate", "steps": [{"name": "a", "action": "transform", "requires_approval": true, "input": {"value": 1}}]});
    let quick = json!({"name": "quick", "steps": [{"name": "a", "action": "transform", "input": {"value": 1}}]});
    let (wf_gate, wf_quick) = (
        app.create_workflow(&gate).await,
        app.create_workflow(&quick).await,
    );
    let mut gated = Vec::new();
    for _ in 0..3 {
        gated.push(app.start_run(&wf_gate, json!({})).await);
    }
    let quick_run = app.start_run(&wf_quick, json!({})).await;
    app.wait_until_finished(&quick_run).await;
    for id in &gated {
        app.wait_for_status(id, "WAITING_APPROVAL").await;
    }
    let waiting: Value = app
        .get("/v1/runs?status=WAITING_APPROVAL&limit=2")
        .await
        .json()
        .await
        .unwrap();
    let first: Vec<&str> = waiting["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, [gated[2].as_str(), gated[1].as_str()]);
    let cursor = waiting["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .get(&format!(
            "/v1/runs?status=WAITING_APPROVAL&limit=2&cursor={cursor}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"][0]["id"], gated[0].as_str());
    assert_eq!(rest["next_cursor"], Value::Null);
    let by_workflow: Value = app
        .get(&format!("/v1/runs?workflow_id={wf_quick}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_workflow["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        by_workflow["items"][0]["steps"][0]["status"], "SUCCEEDED",
        "list items carry their steps"
    );
}

#[tokio::test]
async fn a_run_longer_than_its_timeout_fails() {
    let downstream = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&downstream)
        .await;
    let app = spawn_app().await;
    let wf = app
        .create_workflow(&json!({"name": "bounded", "timeout_ms": 300, "steps": [
            {"name": "slow", "action": "http", "input": {"url": format!("{}/slow", downstream.uri())}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "FAILED");
    assert!(
        done["error"].as_str().unwrap().contains("timeout_ms 300"),
        "{done}"
    );
    assert_eq!(done["steps"][0]["status"], "CANCELED");
}

#[tokio::test]
async fn policy_requires_approval_gates_every_step() {
    let app = spawn_app_with(|c| c.policy.requires_approval = true).await;
    let wf = app
        .create_workflow(&json!({"name": "gated", "steps": [{"name": "a", "action": "transform", "input": {"value": 1}}]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let parked = app.wait_for_status(&run, "WAITING_APPROVAL").await;
    assert_eq!(parked["steps"][0]["status"], "WAITING_APPROVAL");
}
