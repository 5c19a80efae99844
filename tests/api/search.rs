//! Run and workflow search (`GET /v1/runs`, `/v1/runs/counts`, `/v1/workflows`): every
//! filter alone and together, the summary view, and query parameters refused with their
//! pointer. Both stores.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::stores::{Store, on_both_stores, spawn_on};

on_both_stores!(
    runs_are_found_by_statuses_version_time_and_trigger,
    runs_are_found_by_context_members_as_they_are_now,
    the_summary_view_leaves_out_contexts_outputs_and_attempts,
    counts_by_status_follow_the_same_filters,
    workflows_are_found_by_name_prefix,
    unknown_or_bad_query_parameters_answer_400_at_their_pointer,
);

async fn get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The ids of the runs `GET /v1/runs?{query}` answers (one page of at most 500).
async fn found(app: &TestApp, query: &str) -> BTreeSet<String> {
    let (status, page) = get_json(app, &format!("/v1/runs?limit=500&{query}")).await;
    assert_eq!(status, 200, "{query}: {page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn ids<const N: usize>(runs: [&String; N]) -> BTreeSet<String> {
    runs.into_iter().cloned().collect()
}

fn quote(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn runs_are_found_by_statuses_version_time_and_trigger(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let ok = app
        .create_workflow(&json!({"name": "ok", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}}
        ]}))
        .await;
    let gated = app
        .create_workflow(&json!({"name": "gated", "steps": [
            {"name": "gate", "action": "transform", "requires_approval": true, "input": {"value": 1}}
        ]}))
        .await;
    let failing = app
        .create_workflow(&json!({"name": "failing", "steps": [
            {"name": "boom", "action": "transform", "input": {"value": "{{ context.missing.deeper }}"}}
        ]}))
        .await;
    let succeeded = app.start_run(&ok, json!({})).await;
    assert_eq!(
        app.wait_until_finished(&succeeded).await["status"],
        "SUCCEEDED"
    );
    let waiting = app.start_run(&gated, json!({})).await;
    let parked = app.wait_for_status(&waiting, "WAITING_APPROVAL").await;
    let failed = app.start_run(&failing, json!({})).await;
    assert_eq!(app.wait_until_finished(&failed).await["status"], "FAILED");
    let put = app
        .put(
            &format!("/v1/workflows/{ok}"),
            &json!({"name": "ok", "steps": [{"name": "a", "action": "transform", "input": {"value": 2}}]}),
        )
        .await;
    assert_eq!(put.status(), 200);
    let on_v2 = app.start_run(&ok, json!({})).await;
    let last = app.wait_until_finished(&on_v2).await;

    let all = ids([&succeeded, &waiting, &failed, &on_v2]);
    assert_eq!(found(&app, "").await, all);
    assert_eq!(
        found(&app, "status=FAILED,WAITING_APPROVAL").await,
        ids([&waiting, &failed])
    );
    assert_eq!(
        found(&app, "status=failed&status=waiting_approval").await,
        ids([&waiting, &failed]),
        "repeated and lower-case statuses add up"
    );
    assert_eq!(
        found(&app, "status=SUCCEEDED&workflow_version=2").await,
        ids([&on_v2])
    );
    assert_eq!(
        found(&app, &format!("workflow_id={ok}&workflow_version=1")).await,
        ids([&succeeded])
    );
    assert!(found(&app, "workflow_version=3").await.is_empty());

    // created_after is inclusive and created_before exclusive, so one instant splits.
    let at = quote(parked["created_at"].as_str().unwrap());
    assert_eq!(
        found(&app, &format!("created_after={at}")).await,
        ids([&waiting, &failed, &on_v2])
    );
    assert_eq!(
        found(&app, &format!("created_before={at}")).await,
        ids([&succeeded])
    );
    let end = quote(last["created_at"].as_str().unwrap());
    assert_eq!(
        found(
            &app,
            &format!("created_after={at}&created_before={end}&status=FAILED")
        )
        .await,
        ids([&failed])
    );
    // Another offset is the same instant.
    let plus_two = chrono::DateTime::parse_from_rfc3339(parked["created_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339();
    assert_eq!(
        found(&app, &format!("created_before={}", quote(&plus_two))).await,
        ids([&succeeded])
    );

    // Every run here was started through the API.
    assert_eq!(found(&app, "trigger=api").await, all);
    assert!(found(&app, "trigger=schedule").await.is_empty());
    assert!(
        found(&app, "trigger=webhook&status=SUCCEEDED")
            .await
            .is_empty()
    );

    // Filters hold across pages.
    let (_, first) = get_json(&app, "/v1/runs?status=SUCCEEDED,FAILED&limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = get_json(
        &app,
        &format!(
            "/v1/runs?status=SUCCEEDED,FAILED&limit=2&cursor={}",
            quote(cursor)
        ),
    )
    .await;
    let paged: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(paged, [on_v2.as_str(), failed.as_str(), succeeded.as_str()]);
    assert!(second["next_cursor"].is_null());
}

async fn runs_are_found_by_context_members_as_they_are_now(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let wf = app
        .create_workflow(&json!({"name": "ctx", "steps": [
            {"name": "mark", "action": "transform", "input": {"set": {"stage": "{{ context.next }}"}}}
        ]}))
        .await;
    let long = "x".repeat(400);
    let contexts = [
        json!({"customer": "acme", "tier": 2, "order": {"id": 42}, "next": "done"}),
        json!({"customer": "acme", "tier": "2", "vip": true, "next": "done"}),
        json!({"customer": "bob", "tier": 3, "note": null, "blob": long, "next": "done"}),
        json!({"customer": "o'brien \"quoted\"", "tier": 2.5, "next": "shipped"}),
    ];
    let mut runs = Vec::new();
    for context in contexts {
        let run = app.start_run(&wf, context).await;
        assert_eq!(app.wait_until_finished(&run).await["status"], "SUCCEEDED");
        runs.push(run);
    }
    let [acme, acme2, bob, obrien] = [&runs[0], &runs[1], &runs[2], &runs[3]];

    assert_eq!(
        found(&app, "context.customer=acme").await,
        ids([acme, acme2])
    );
    assert_eq!(
        found(&app, "context.tier=2").await,
        ids([acme, acme2]),
        "2 and \"2\" both match context.tier=2"
    );
    assert_eq!(found(&app, "context.tier=2.5").await, ids([obrien]));
    assert_eq!(
        found(&app, "context.customer=acme&context.vip=true").await,
        ids([acme2])
    );
    assert_eq!(found(&app, "context.vip=false").await, BTreeSet::new());
    assert_eq!(found(&app, "context.note=null").await, ids([bob]));
    assert_eq!(found(&app, "context.order.id=42").await, ids([acme]));
    assert_eq!(
        found(&app, &format!("context.blob={long}")).await,
        ids([bob]),
        "a value too long for the index is still found"
    );
    let odd = quote("o'brien \"quoted\"");
    assert_eq!(
        found(&app, &format!("context.customer={odd}")).await,
        ids([obrien])
    );
    assert_eq!(
        found(&app, "context.customer=acme%27%20OR%201%3D1").await,
        BTreeSet::new(),
        "values are data, never SQL"
    );
    // A member a step set is found by its new value.
    assert_eq!(found(&app, "context.stage=shipped").await, ids([obrien]));
    assert_eq!(
        found(&app, "context.stage=done").await,
        ids([acme, acme2, bob])
    );
    assert_eq!(
        found(
            &app,
            "context.stage=done&status=SUCCEEDED&context.customer=bob"
        )
        .await,
        ids([bob])
    );

    // A re-run's context patch is what later searches see.
    let retried = app
        .post(
            &format!("/v1/runs/{bob}/retry"),
            &json!({"from_step": "mark", "context": {"customer": "carol"}}),
        )
        .await;
    assert_eq!(retried.status(), 200);
    app.wait_until_finished(bob).await;
    assert_eq!(found(&app, "context.customer=carol").await, ids([bob]));
    assert!(found(&app, "context.customer=bob").await.is_empty());
}

async fn the_summary_view_leaves_out_contexts_outputs_and_attempts(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let wf = app
        .create_workflow(&json!({"name": "light", "steps": [
            {"name": "a", "action": "transform", "input": {"value": "{{ context.secret_plan }}"}},
            {"name": "b", "action": "transform", "input": {"value": 2}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({"secret_plan": "big"})).await;
    let full = app.wait_until_finished(&run).await;
    let (status, page) = get_json(&app, "/v1/runs?view=summary").await;
    assert_eq!(status, 200);
    let item = &page["items"][0];
    assert_eq!(item["id"], run.as_str());
    assert_eq!(item["status"], "SUCCEEDED");
    assert_eq!(item["workflow_version"], 1);
    assert_eq!(item["created_at"], full["created_at"]);
    assert_eq!(item["finished_at"], full["finished_at"]);
    assert!(item.get("context").is_none(), "{item}");
    assert!(item.get("approvals").is_none(), "{item}");
    let steps = item["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for (step, before) in steps.iter().zip(full["steps"].as_array().unwrap()) {
        assert_eq!(step["name"], before["name"]);
        assert_eq!(step["status"], "SUCCEEDED");
        assert_eq!(step["started_at"], before["started_at"]);
        assert!(step.get("output").is_none(), "{step}");
        assert!(step.get("attempts").is_none(), "{step}");
    }
    assert!(!page.to_string().contains("big"));

    // The default stays the full run, as GET /v1/runs/{id} answers it.
    let (_, full_page) = get_json(&app, "/v1/runs").await;
    assert_eq!(full_page["items"][0], full);
    let (_, explicit) = get_json(&app, "/v1/runs?view=full").await;
    assert_eq!(explicit["items"][0], full);
}

async fn counts_by_status_follow_the_same_filters(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let wf = app
        .create_workflow(&json!({"name": "c", "steps": [
            {"name": "a", "action": "transform", "input": {"value": "{{ context.n.m }}"}}
        ]}))
        .await;
    for context in [
        json!({"n": {"m": 1}, "team": "red"}),
        json!({"n": {"m": 1}, "team": "red"}),
        json!({"team": "red"}),
        json!({"team": "blue"}),
    ] {
        let run = app.start_run(&wf, context).await;
        app.wait_until_finished(&run).await;
    }
    let (status, all) = get_json(&app, "/v1/runs/counts").await;
    assert_eq!(status, 200);
    assert_eq!(
        all,
        json!({"counts": {"SUCCEEDED": 2, "FAILED": 2}, "total": 4})
    );
    let (_, red) = get_json(&app, "/v1/runs/counts?context.team=red").await;
    assert_eq!(
        red,
        json!({"counts": {"SUCCEEDED": 2, "FAILED": 1}, "total": 3})
    );
    let (_, failed) = get_json(&app, "/v1/runs/counts?status=FAILED&context.team=blue").await;
    assert_eq!(failed, json!({"counts": {"FAILED": 1}, "total": 1}));
    let (status, problem) = get_json(&app, "/v1/runs/counts?limit=5").await;
    assert_eq!(status, 400, "counts take no paging: {problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/limit");
}

async fn workflows_are_found_by_name_prefix(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let step = json!([{"name": "a", "action": "transform", "input": {"value": 1}}]);
    let mut made = Vec::new();
    for name in ["billing-daily", "billing-monthly", "deploy", "Billing-odd"] {
        made.push(
            app.create_workflow(&json!({"name": name, "steps": step}))
                .await,
        );
    }
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, page) = get_json(&app, "/v1/workflows?name_prefix=billing-").await;
    assert_eq!(status, 200);
    assert_eq!(names(&page), ["billing-monthly", "billing-daily"]);
    let (_, page) = get_json(&app, "/v1/workflows?name_prefix=billing-&limit=1").await;
    assert_eq!(names(&page), ["billing-monthly"]);
    let cursor = quote(page["next_cursor"].as_str().unwrap());
    let (_, page) = get_json(
        &app,
        &format!("/v1/workflows?name_prefix=billing-&limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(names(&page), ["billing-daily"]);
    let (_, page) = get_json(&app, "/v1/workflows?name_prefix=%25").await;
    assert_eq!(names(&page), Vec::<String>::new(), "% is no wildcard");
    let (_, page) = get_json(&app, "/v1/workflows?name_prefix=").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
}

async fn unknown_or_bad_query_parameters_answer_400_at_their_pointer(store: Store) {
    let app = spawn_on(store, |_| {}).await;
    let wf = app
        .create_workflow(&json!({"name": "q", "steps": [
            {"name": "a", "action": "transform", "input": {"value": 1}}
        ]}))
        .await;
    let run = app.start_run(&wf, json!({})).await;
    app.wait_until_finished(&run).await;
    let many: String = (0..17).map(|i| format!("context.k{i}=v&")).collect();
    let cases = [
        ("/v1/runs?stauts=FAILED", "/stauts"),
        ("/v1/runs?status=DONE", "/status"),
        ("/v1/runs?status=FAILED,NOPE", "/status"),
        ("/v1/runs?created_after=yesterday", "/created_after"),
        (
            "/v1/runs?created_before=2024-13-01T00:00:00Z",
            "/created_before",
        ),
        ("/v1/runs?workflow_version=0", "/workflow_version"),
        ("/v1/runs?workflow_version=-1", "/workflow_version"),
        ("/v1/runs?trigger=cron", "/trigger"),
        ("/v1/runs?view=everything", "/view"),
        ("/v1/runs?context.=x", "/context."),
        ("/v1/runs?context.a..b=x", "/context.a..b"),
        ("/v1/runs?context.a.b%22c=x", "/context.a.b\"c"),
        ("/v1/runs?workflow_id=a&workflow_id=b", "/workflow_id"),
        ("/v1/runs?limit=0", "/limit"),
        ("/v1/runs?limit=100000", "/limit"),
        ("/v1/runs?a%2Fb=1", "/a~1b"),
        (&format!("/v1/runs?{many}"), "/context.k16"),
        ("/v1/workflows?nme_prefix=x", "/nme_prefix"),
        ("/v1/workflows?archived=maybe", ""),
        (&format!("/v1/runs/{run}?verbose=1"), "/verbose"),
        (&format!("/v1/runs/{run}/logs?aftr=3"), "/aftr"),
        (&format!("/v1/workflows/{wf}?version=1&x=2"), "/x"),
        ("/v1/openapi.json?format=yaml", "/format"),
    ];
    for (path, pointer) in cases {
        let (status, problem) = get_json(&app, path).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert_eq!(problem["status"], 400, "{path}");
        if !pointer.is_empty() {
            assert_eq!(
                problem["errors"][0]["pointer"], pointer,
                "{path}: {problem}"
            );
        }
    }
    let (status, problem) = get_json(&app, "/v1/runs?stauts=FAILED").await;
    assert_eq!(status, 400);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("stauts") && detail.contains("status"),
        "{detail}"
    );
    // What is documented is accepted, even when empty.
    for path in [
        "/v1/runs?workflow_id=&status=",
        "/v1/runs?view=summary&trigger=api&limit=5",
        "/health?",
    ] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
}
