//! Re-running finished runs (`POST /v1/runs/{id}/retry`): from the failed step or any
//! step, with context members set, on another version; every earlier attempt stays on
//! the run under `retries`. Both stores.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::TestApp;
use crate::stores::{Store, on_both_stores, spawn_on};

on_both_stores!(
    a_failed_run_goes_again_from_its_failed_step_and_keeps_every_earlier_attempt,
    a_finished_run_goes_again_from_any_step_with_context_members_set,
    a_run_goes_again_on_another_version_whose_earlier_steps_are_the_same,
    a_re_run_asks_again_for_the_approvals_of_the_steps_it_resets,
    re_runs_are_refused_for_active_runs_archived_workflows_and_bad_requests,
    hostile_re_run_bodies_are_refused_and_the_history_stays_bounded,
);

async fn retry(app: &TestApp, run: &str, body: Value) -> (u16, Value) {
    let response = app.post(&format!("/v1/runs/{run}/retry"), &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn names_and_statuses(run: &Value) -> Vec<(String, String)> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn a_failed_run_goes_again_from_its_failed_step_and_keeps_every_earlier_attempt(
    store: Store,
) {
    let downstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/flaky"))
        .respond_with(ResponseTemplate::new(500).set_body_string("down"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&downstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/flaky"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&downstream)
        .await;
    let app = spawn_on(store, |_| {}).await;
    let wf = app
        .create_workflow(&json!({"name": "flaky", "steps": [
            {"name": "prepare", "action": "transform", "input": {"set": {"prepared": true}}},
            {"name": "call", "action": "http", "input": {"url": format!("{}/flaky", downstream.uri())}},
            {"name": "after", "action": "transform", "input": {"value": "{{ steps.call.output.body.ok }}"}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let failed = app.wait_until_finished(&run).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");

    let (status, answer) = retry(&app, &run, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "RUNNING");
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(
        done["steps"][0], failed["steps"][0],
        "prepare kept as it was"
    );
    assert_eq!(done["steps"][1]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(done["steps"][2]["output"], true);
    assert!(done.get("error").is_none());

    let retries = done["retries"].as_array().unwrap();
    assert_eq!(retries.len(), 1);
    let record = &retries[0];
    assert_eq!(record["n"], 1);
    assert_eq!(record["by"], "anonymous");
    assert_eq!(record["from_step"], "call");
    assert_eq!(record["from_version"], 1);
    assert_eq!(record["version"], 1);
    assert_eq!(record["previous_status"], "FAILED");
    assert_eq!(record["previous_error"], failed["error"]);
    assert_eq!(record["previous_started_at"], failed["started_at"]);
    assert_eq!(record["previous_finished_at"], failed["finished_at"]);
    // The earlier attempts, exactly as the run showed them before.
    assert_eq!(
        record["steps"],
        json!([failed["steps"][1], failed["steps"][2]])
    );
    assert_eq!(record["steps"][0]["attempts"][0]["http_code"], 500);
    let log = app.logs(&run).await;
    assert!(
        log.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .starts_with("re-run 1 requested by anonymous from step \"call\"")),
        "{log:?}"
    );
}

async fn a_finished_run_goes_again_from_any_step_with_context_members_set(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let wf = app
        .create_workflow(&json!({"name": "greet", "steps": [
            {"name": "greet", "action": "transform", "input": {"set": {"greeting": "hi {{ context.name }}"}}},
            {"name": "sign", "action": "transform", "input": {"value": "{{ context.name }} / {{ context.greeting }}"}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({"name": "ann"})).await;
    let first = app.wait_until_finished(&run).await;
    assert_eq!(first["status"], "SUCCEEDED");

    let (status, problem) = retry(&app, &run, json!({})).await;
    assert_eq!(
        status, 409,
        "a run without a failed step needs from_step: {problem}"
    );
    assert!(problem["detail"].as_str().unwrap().contains("from_step"));

    let (status, answer) = retry(
        &app,
        &run,
        json!({"from_step": "sign", "context": {"name": "bob"}, "reason": "wrong name"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["steps"][0], first["steps"][0], "greet kept its output");
    assert_eq!(done["steps"][1]["output"], "bob / hi ann");
    assert_eq!(done["context"]["name"], "bob");
    let record = &done["retries"][0];
    assert_eq!(record["reason"], "wrong name");
    assert_eq!(record["context"], json!({"name": "bob"}));
    assert_eq!(record["previous_status"], "SUCCEEDED");
    assert_eq!(record["steps"], json!([first["steps"][1]]));

    let (status, _) = retry(&app, &run, json!({"from_step": "greet"})).await;
    assert_eq!(status, 200);
    let again = app.wait_until_finished(&run).await;
    assert_eq!(again["retries"].as_array().unwrap().len(), 2);
    assert_eq!(again["retries"][1]["n"], 2);
    assert_eq!(again["steps"][1]["output"], "bob / hi bob");
}

async fn a_run_goes_again_on_another_version_whose_earlier_steps_are_the_same(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let step = |name: &str, value: &str| json!({"name": name, "action": "transform", "input": {"value": value}});
    let wf = app
        .create_workflow(&json!({"name": "v", "steps": [step("a", "a1"), step("b", "b1")]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    let first = app.wait_until_finished(&run).await;
    let put = |steps: Value| {
        let app = &app;
        let wf = wf.clone();
        async move {
            let response = app
                .put(
                    &format!("/v1/workflows/{wf}"),
                    &json!({"name": "v", "steps": steps}),
                )
                .await;
            assert_eq!(response.status(), 200);
        }
    };
    put(json!([step("a", "a2"), step("b", "b2"), step("c", "c2")])).await;
    let (status, answer) = retry(&app, &run, json!({"from_step": "b", "version": 2})).await;
    assert_eq!(status, 200, "{answer}");
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["workflow_version"], 2);
    assert_eq!(
        names_and_statuses(&done),
        [("a", "SUCCEEDED"), ("b", "SUCCEEDED"), ("c", "SUCCEEDED")]
            .map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    assert_eq!(done["steps"][0]["output"], first["steps"][0]["output"]);
    assert_eq!(done["steps"][1]["output"], "b2");
    assert_eq!(done["steps"][2]["output"], "c2");
    assert_eq!(done["retries"][0]["from_version"], 1);
    assert_eq!(done["retries"][0]["version"], 2);

    put(json!([step("x", "x3"), step("b", "b3")])).await;
    let (status, problem) = retry(&app, &run, json!({"from_step": "b", "version": 3})).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/version");
    let (status, problem) = retry(&app, &run, json!({"from_step": "b", "version": 99})).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/version");
    let (status, problem) = retry(&app, &run, json!({"from_step": "nope"})).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/from_step");

    // A version with fewer steps: the rows past them go, and stay gone when read back.
    put(json!([step("a", "a4")])).await;
    let (status, _) = retry(&app, &run, json!({"from_step": "a", "version": 4})).await;
    assert_eq!(status, 200);
    let shorter = app.wait_until_finished(&run).await;
    assert_eq!(shorter["steps"].as_array().unwrap().len(), 1, "{shorter}");
    assert_eq!(shorter["steps"][0]["output"], "a4");
    let removed: Vec<&str> = shorter["retries"][1]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(removed, ["a", "b", "c"]);
}

async fn a_re_run_asks_again_for_the_approvals_of_the_steps_it_resets(store: Store) {
    let downstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/deploy"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&downstream)
        .await;
    let app = spawn_on(store, |_| {}).await;
    let wf = app
        .create_workflow(&json!({"name": "deploy", "steps": [
            {"name": "gate", "action": "transform", "requires_approval": true, "input": {"value": 1}},
            {"name": "deploy", "action": "http", "input": {"url": format!("{}/deploy", downstream.uri())}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    app.approve(&run).await;
    assert_eq!(app.wait_until_finished(&run).await["status"], "FAILED");

    // From the failed step: the gate was passed and keeps its approval.
    let (status, _) = retry(&app, &run, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(app.wait_until_finished(&run).await["status"], "FAILED");
    // From the gate: it asks again.
    let (status, _) = retry(&app, &run, json!({"from_step": "gate"})).await;
    assert_eq!(status, 200);
    let parked = app.wait_for_status(&run, "WAITING_APPROVAL").await;
    assert_eq!(parked["steps"][0]["status"], "WAITING_APPROVAL");
    app.approve(&run).await;
    let done = app.wait_until_finished(&run).await;
    assert_eq!(done["approvals"].as_array().unwrap().len(), 2);
    assert_eq!(done["retries"].as_array().unwrap().len(), 2);
    assert_eq!(downstream.received_requests().await.unwrap().len(), 3);
}

async fn re_runs_are_refused_for_active_runs_archived_workflows_and_bad_requests(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let wf = app
        .create_workflow(&json!({"name": "gated", "steps": [
            {"name": "gate", "action": "transform", "requires_approval": true, "input": {"value": 1}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_for_status(&run, "WAITING_APPROVAL").await;
    let (status, problem) = retry(&app, &run, json!({})).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("WAITING_APPROVAL")
    );

    let canceled = app
        .post(&format!("/v1/runs/{run}/cancel"), &json!({}))
        .await;
    assert_eq!(canceled.status(), 200);
    let (status, problem) = retry(&app, &run, json!({"form_step": "gate"})).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/form_step");
    let (status, problem) = retry(&app, &run, json!({"context": [1]})).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/context");

    let archived = app
        .client
        .delete(app.url(&format!("/v1/workflows/{wf}")))
        .send()
        .await
        .unwrap();
    assert_eq!(archived.status(), 204);
    let (status, problem) = retry(&app, &run, json!({})).await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("archived"));
    let (status, _) = retry(&app, "run_unknown", json!({})).await;
    assert_eq!(status, 404);
}

async fn hostile_re_run_bodies_are_refused_and_the_history_stays_bounded(store: Store) {
    let app = spawn_on(store, |raw| {
        raw.limits.max_context_bytes = 4096;
        raw.limits.max_output_bytes = 1500;
        raw.limits.body_bytes = 64 * 1024;
    })
    .await;
    let wf = app
        .create_workflow(&json!({"name": "big", "steps": [
            {"name": "a", "action": "transform", "input": {"value": "{{ context.blob }}"}},
            {"name": "b", "action": "transform", "input": {"value": "{{ context.blob }}"}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({"blob": "x".repeat(1000)})).await;
    assert_eq!(app.wait_until_finished(&run).await["status"], "SUCCEEDED");
    let patch = |n: usize| json!({"from_step": "a", "context": {"more": "y".repeat(n)}});

    let (status, problem) = retry(&app, &run, patch(5000)).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/context");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("limits.max_context_bytes")
    );
    let over_body = app
        .post(&format!("/v1/runs/{run}/retry"), &patch(100_000))
        .await;
    assert_eq!(over_body.status(), 413);
    let deep = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    let nested = app
        .client
        .post(app.url(&format!("/v1/runs/{run}/retry")))
        .header("content-type", "application/json")
        .body(format!("{{\"context\": {deep}}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        nested.status(),
        400,
        "too deep to parse is bad input, not a crash"
    );
    for (body, pointer) in [
        (json!({"version": 0}), "/version"),
        (json!({"version": -1}), "/version"),
        (json!({"version": 1.5}), "/version"),
        (json!({"version": "2"}), "/version"),
        (json!({"version": 99_999_999_999u64}), "/version"),
        (json!({"from_step": 7}), "/from_step"),
        (json!({"from_step": ""}), "/from_step"),
        (json!({"reason": "r".repeat(1001)}), "/reason"),
        (json!({"context": "x=1"}), "/context"),
        (
            json!({"from_step": "a", "version": 1, "extra": true}),
            "/extra",
        ),
    ] {
        let (status, problem) = retry(&app, &run, body.clone()).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
    }
    let array = app
        .post(&format!("/v1/runs/{run}/retry"), &json!([1, 2]))
        .await;
    assert_eq!(array.status(), 400);
    let after = app.run(&run).await;
    assert!(
        after.get("retries").is_none(),
        "nothing refused was recorded: {after}"
    );

    // A record over limits.max_output_bytes keeps attempts and errors, not outputs.
    let (status, _) = retry(&app, &run, json!({"from_step": "a", "reason": "again"})).await;
    assert_eq!(status, 200);
    let done = app.wait_until_finished(&run).await;
    let record = &done["retries"][0];
    assert_eq!(record["trimmed"], json!(["outputs"]), "{record}");
    assert!(record["steps"][0].get("output").is_none());
    assert_eq!(record["steps"][0]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(record["steps"][1]["status"], "SUCCEEDED");
    assert_eq!(record["reason"], "again");

    // At most 50 re-runs per run.
    for n in 2..=50 {
        let (status, problem) = retry(&app, &run, json!({"from_step": "b"})).await;
        assert_eq!(status, 200, "re-run {n}: {problem}");
        app.wait_until_finished(&run).await;
    }
    let (status, problem) = retry(&app, &run, json!({"from_step": "b"})).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("start a new run")
    );
    assert_eq!(app.run(&run).await["retries"].as_array().unwrap().len(), 50);
}
