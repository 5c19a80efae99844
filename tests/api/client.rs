//! The command-line client: the real binary as a subprocess against a real server, for every
//! subcommand, its exit codes, its tables and its `-o json`.

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestApp, spawn_app};

/// The binary with `ORCHESTRATOR_URL` set to `server`, no token, no colors.
pub fn orchestrator(server: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    command
        .env("ORCHESTRATOR_URL", server)
        .env_remove("ORCHESTRATOR_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs the client with `args` to its end (at most [`PATIENCE`]).
pub async fn cli(server: &str, args: &[&str]) -> Output {
    finish(orchestrator(server).args(args)).await
}

pub async fn finish(command: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("the client finishes within the patience bound")
        .expect("the client runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON document a `-o json` command printed.
pub fn json_out(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("-o json prints one JSON document")
}

/// `hello` sets a greeting, `check` fails the run unless it greets ada.
pub fn greet() -> Value {
    json!({"id": "greet", "name": "greet", "steps": [
        {"name": "hello", "action": "transform", "input": {"set": {"greeting": "hello {{ context.who }}"}}},
        {"name": "check", "action": "condition", "input": {"key": "greeting", "equals": "hello ada", "on_false": "fail"}}
    ]})
}

/// `build`, then `ship` behind an approval.
pub fn gated() -> Value {
    json!({"id": "gated", "name": "gated", "steps": [
        {"name": "build", "action": "transform", "input": {"set": {"built": true}}},
        {"name": "ship", "action": "transform", "requires_approval": true, "input": {"set": {"shipped": true}}}
    ]})
}

async fn versions(app: &TestApp, id: &str) -> usize {
    let body: Value = app
        .get(&format!("/v1/workflows/{id}/versions"))
        .await
        .json()
        .await
        .unwrap();
    body["items"].as_array().unwrap().len()
}

fn results(out: &Output) -> Vec<(String, String)> {
    json_out(out)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let file = Path::new(i["file"].as_str().unwrap()).file_name().unwrap();
            (
                file.to_string_lossy().into_owned(),
                i["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn apply_creates_updates_only_what_changed_and_a_second_apply_adds_no_version() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("greet.yaml"),
        serde_yaml::to_string(&greet()).unwrap(),
    )
    .unwrap();
    let mut by_name = gated();
    by_name.as_object_mut().unwrap().remove("id");
    std::fs::write(dir.path().join("gated.json"), by_name.to_string()).unwrap();
    std::fs::write(dir.path().join("README.md"), "not a workflow").unwrap();
    let folder = dir.path().to_str().unwrap();

    let out = cli(&app.address, &["apply", folder, "-o", "json"]).await;
    assert_eq!(
        results(&out),
        [
            ("gated.json".into(), "created".into()),
            ("greet.yaml".into(), "created".into())
        ]
    );
    let gated_id = json_out(&out)["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(gated_id.starts_with("wf_"), "{gated_id}");

    let out = cli(&app.address, &["apply", folder]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["FILE", "RESULT", "WORKFLOW", "VERSION"]
    );
    assert_eq!(table.matches("unchanged").count(), 2, "{table}");
    assert_eq!(versions(&app, "greet").await, 1);
    assert_eq!(
        versions(&app, &gated_id).await,
        1,
        "matched by name, not created again"
    );

    let mut changed = greet();
    changed["description"] = json!("now described");
    std::fs::write(
        dir.path().join("greet.yaml"),
        serde_yaml::to_string(&changed).unwrap(),
    )
    .unwrap();
    let out = cli(&app.address, &["-o", "json", "apply", folder]).await;
    assert_eq!(
        results(&out),
        [
            ("gated.json".into(), "unchanged".into()),
            ("greet.yaml".into(), "updated".into())
        ]
    );
    assert_eq!(json_out(&out)["items"][1]["version"], 2);
    assert_eq!(versions(&app, "greet").await, 2);
    let out = cli(&app.address, &["apply", folder, "-o", "json"]).await;
    assert_eq!(
        results(&out),
        [
            ("gated.json".into(), "unchanged".into()),
            ("greet.yaml".into(), "unchanged".into())
        ]
    );
    assert_eq!(versions(&app, "greet").await, 2);
}

#[tokio::test]
async fn apply_prints_each_violation_with_its_pointer_and_exits_1() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"name": "bad", "steps": [{"name": "a", "action": "transform", "input": {"value": 1}}, {"name": "a", "action": "transform", "input": {"value": 2}}]}"#).unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, serde_yaml::to_string(&greet()).unwrap()).unwrap();
    let out = cli(
        &app.address,
        &["apply", bad.to_str().unwrap(), good.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.json: 400 Invalid workflow definition"),
        "{err}"
    );
    assert!(
        err.contains("  /steps/1/name: duplicate step name"),
        "{err}"
    );
    assert!(
        stdout(&out).contains("created"),
        "the valid file is applied: {}",
        stdout(&out)
    );
    let out = cli(
        &app.address,
        &["apply", dir.path().join("missing.yaml").to_str().unwrap()],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a file that does not exist is a usage error"
    );
}

#[tokio::test]
async fn run_wait_exits_0_when_the_run_succeeds_and_1_when_it_fails() {
    let app = spawn_app().await;
    app.create_workflow(&greet()).await;
    let out = cli(
        &app.address,
        &[
            "run",
            "greet",
            "--context",
            r#"{"who": "ada"}"#,
            "--wait",
            "-o",
            "json",
        ],
    )
    .await;
    let run = json_out(&out);
    assert_eq!(run["status"], "SUCCEEDED");
    assert_eq!(run["context"]["greeting"], "hello ada");

    let out = cli(
        &app.address,
        &["run", "greet", "--context", r#"{"who": "bob"}"#, "--wait"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(" FAILED after ") && text.contains("check"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx.yaml");
    std::fs::write(&context, "who: ada\n").unwrap();
    let arg = format!("@{}", context.display());
    let out = cli(
        &app.address,
        &[
            "run",
            "greet",
            "--context",
            &arg,
            "--version",
            "1",
            "--wait",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    let out = cli(&app.address, &["run", "greet", "-o", "json"]).await;
    let started = json_out(&out);
    assert!(
        started["id"].as_str().unwrap().starts_with("run_"),
        "without --wait the new run is printed"
    );
}

#[tokio::test]
async fn runs_lists_and_filters_and_get_shows_steps_and_approvals() {
    let app = spawn_app().await;
    app.create_workflow(&greet()).await;
    app.create_workflow(&gated()).await;
    let ok = app.start_run("greet", json!({"who": "ada"})).await;
    app.wait_for_status(&ok, "SUCCEEDED").await;
    let waiting = app.start_run("gated", json!({})).await;
    app.wait_for_status(&waiting, "WAITING_APPROVAL").await;

    let out = cli(&app.address, &["runs"]).await;
    assert_eq!(out.status.code(), Some(0));
    let table = stdout(&out);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "RUN", "WORKFLOW", "VERSION", "STATUS", "STEP", "CREATED", "DURATION"
        ]
    );
    let first = table.lines().nth(1).unwrap();
    assert!(
        first.starts_with(&waiting)
            && first.contains("WAITING_APPROVAL")
            && first.contains(" ship "),
        "{table}"
    );
    assert!(
        table.contains("just now") || table.contains("s ago"),
        "{table}"
    );
    let columns: Vec<usize> = table
        .lines()
        .map(|l| l.find("gated").or(l.find("greet")).unwrap_or(0))
        .skip(1)
        .collect();
    assert!(columns.windows(2).all(|w| w[0] == w[1]), "aligned: {table}");

    let out = cli(&app.address, &["runs", "--workflow", "greet", "-o", "json"]).await;
    let items = json_out(&out)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], ok.as_str());
    let out = cli(
        &app.address,
        &[
            "runs",
            "--status",
            "waiting_approval",
            "--limit",
            "1",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(json_out(&out)["items"][0]["id"], waiting.as_str());
    let out = cli(&app.address, &["runs", "--status", "SLEEPY"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("400 Bad request") && stderr(&out).contains("/status"),
        "{}",
        stderr(&out)
    );

    app.approve(&waiting).await;
    app.wait_for_status(&waiting, "SUCCEEDED").await;
    let out = cli(&app.address, &["get", &waiting]).await;
    let text = stdout(&out);
    assert!(text.contains("Status:   SUCCEEDED"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ship ") && l.contains("SUCCEEDED")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ship ") && l.contains("approved")),
        "{text}"
    );
    let out = cli(&app.address, &["get", &waiting, "-o", "json"]).await;
    assert_eq!(json_out(&out)["approvals"][0]["decision"], "approved");
    let out = cli(&app.address, &["get", "run_nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "orchestrator: 404 Not found: run run_nope not found"
    );
}

#[tokio::test]
async fn logs_prints_the_whole_log_as_lines_or_json_lines() {
    let app = spawn_app().await;
    app.create_workflow(&greet()).await;
    let run = app.start_run("greet", json!({"who": "ada"})).await;
    app.wait_for_status(&run, "SUCCEEDED").await;
    let log = app.logs(&run).await;
    let out = cli(&app.address, &["logs", &run]).await;
    let text = stdout(&out);
    assert_eq!(text.lines().count(), log.len(), "{text}");
    assert!(text.lines().any(|l| l.contains("info  [hello] ")), "{text}");
    let out = cli(&app.address, &["logs", &run, "-o", "json"]).await;
    let entries: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries, log);
}
