//! The client's `retry` with edits, run filters, `delete`, `archive` and `workflows`: the
//! real binary against a real server.

use serde_json::{Value, json};

use crate::client::{cli, greet, json_out, stderr, stdout};
use crate::helpers::spawn_app;

#[tokio::test]
async fn retry_runs_again_from_a_step_with_context_and_version_and_follows() {
    let app = spawn_app().await;
    app.create_workflow(&greet()).await;
    let run = app.start_run("greet", json!({"who": "bob"})).await;
    assert_eq!(app.wait_until_finished(&run).await["status"], "FAILED");

    let out = cli(
        &app.address,
        &[
            "retry",
            &run,
            "--from-step",
            "hello",
            "--context",
            r#"{"who": "ada"}"#,
            "--reason",
            "wrong person",
            "--follow",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "{run} retried; the run is RUNNING (re-run 1 from step hello)"
        )),
        "{text}"
    );
    assert!(text.contains("re-run 1 requested by anonymous from step \"hello\": wrong person"));
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("SUCCEEDED"),
        "{text}"
    );
    let done = app.run(&run).await;
    assert_eq!(done["context"]["who"], "ada");
    assert_eq!(done["retries"][0]["reason"], "wrong person");

    let put = app
        .put(
            "/v1/workflows/greet",
            &json!({"name": "greet", "steps": greet()["steps"]}),
        )
        .await;
    assert_eq!(put.status(), 200);
    let out = cli(
        &app.address,
        &[
            "retry",
            &run,
            "--from-step",
            "check",
            "--version",
            "2",
            "--wait",
            "-o",
            "json",
        ],
    )
    .await;
    let again = json_out(&out);
    assert_eq!(again["workflow_version"], 2);
    assert_eq!(again["retries"][1]["version"], 2);

    let out = cli(&app.address, &["get", &run]).await;
    let text = stdout(&out);
    assert!(text.contains("RE-RUN"), "{text}");
    assert!(text.contains("wrong person"), "{text}");
    assert!(text.contains("1→2"), "{text}");

    let out = cli(&app.address, &["retry", &run, "--from-step", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/from_step"), "{}", stderr(&out));
    let out = cli(&app.address, &["retry", &run, "--context", "[1]"]).await;
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

#[tokio::test]
async fn runs_filters_become_search_parameters() {
    let app = spawn_app().await;
    app.create_workflow(&greet()).await;
    let ada = app
        .start_run("greet", json!({"who": "ada", "team": "red"}))
        .await;
    let bob = app
        .start_run("greet", json!({"who": "bob", "team": "red"}))
        .await;
    app.wait_until_finished(&ada).await;
    app.wait_until_finished(&bob).await;
    let ids = |out: &std::process::Output| -> Vec<String> {
        json_out(out)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let out = cli(
        &app.address,
        &[
            "runs",
            "--status",
            "failed",
            "--context",
            "team=red",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(ids(&out), std::slice::from_ref(&bob));
    let out = cli(
        &app.address,
        &[
            "runs",
            "--status",
            "succeeded,failed",
            "--since",
            "1h",
            "--version",
            "1",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(ids(&out), [bob.clone(), ada.clone()]);
    let listed = json_out(&out);
    assert!(listed["items"][0].get("context").is_none(), "summaries");
    let out = cli(&app.address, &["runs", "--until", "1h", "-o", "json"]).await;
    assert!(ids(&out).is_empty());
    let out = cli(
        &app.address,
        &["runs", "--context", "who=ada", "--trigger", "api"],
    )
    .await;
    let text = stdout(&out);
    assert!(text.contains(&ada) && !text.contains(&bob), "{text}");
    assert!(text.lines().next().unwrap().starts_with("RUN "), "{text}");

    let out = cli(&app.address, &["runs", "--since", "last tuesday"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--since"), "{}", stderr(&out));
    let out = cli(&app.address, &["runs", "--status", "DONE"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown status"), "{}", stderr(&out));
}

#[tokio::test]
async fn delete_and_archive_and_the_workflows_listing() {
    let app = spawn_app().await;
    app.create_workflow(&greet()).await;
    let other = json!({"id": "greet-2", "name": "greeting-two", "steps": greet()["steps"]});
    app.create_workflow(&other).await;
    let run = app.start_run("greet", json!({"who": "ada"})).await;
    app.wait_until_finished(&run).await;

    let out = cli(&app.address, &["delete", &run]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("Deleted {run}\n"));
    assert_eq!(app.get(&format!("/v1/runs/{run}")).await.status(), 404);
    let out = cli(&app.address, &["delete", &run]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("deleted by anonymous"),
        "{}",
        stderr(&out)
    );

    let out = cli(
        &app.address,
        &["workflows", "--name-prefix", "greeting", "-o", "json"],
    )
    .await;
    let listed = json_out(&out);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["id"], "greet-2");

    let out = cli(&app.address, &["archive", "greet", "-o", "json"]).await;
    assert_eq!(json_out(&out), json!({"archived": "greet"}));
    let out = cli(&app.address, &["workflows"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("greet-2") && !text.contains("greet "),
        "{text}"
    );
    let out = cli(&app.address, &["workflows", "--archived"]).await;
    let text = stdout(&out);
    let archived_row = text.lines().find(|l| l.starts_with("greet ")).unwrap();
    assert!(archived_row.contains("by anonymous"), "{text}");
    let out = cli(&app.address, &["run", "greet"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("archived"), "{}", stderr(&out));
    let body: Value = app.get("/v1/workflows/greet").await.json().await.unwrap();
    assert_eq!(body["archived_by"], "anonymous");
}
