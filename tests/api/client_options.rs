//! The client's options and failures: usage errors, tokens, an unreachable server, where
//! options go, the server's environment, help and completions.

use serde_json::{Value, json};

use crate::client::{cli, finish, greet, json_out, orchestrator, stderr, stdout};
use crate::helpers::{ServerProcess, spawn_app, spawn_app_with, write_config};
use orchestrator::config::RawToken;

#[tokio::test]
async fn usage_errors_exit_2_and_nothing_is_sent() {
    let app = spawn_app().await;
    app.create_workflow(&greet()).await;
    for args in [
        &["run", "greet", "--context", "{not json"][..],
        &["run", "greet", "--context", "[1, 2]"],
        &["run", "greet", "--version", "x"],
        &["runs", "--bogus"],
        &["approve"],
    ] {
        let out = cli(&app.address, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let runs: Value = app.get("/v1/runs").await.json().await.unwrap();
    assert_eq!(runs["items"].as_array().unwrap().len(), 0);
    let out = cli("localhost:8100", &["runs"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not an http(s) URL"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_wrong_token_prints_the_401_clearly_and_the_right_one_works() {
    let app = spawn_app_with(|raw| {
        raw.auth.tokens = vec![RawToken {
            name: "ci".into(),
            token: "0123456789abcdef-ci".into(),
            role: "admin".into(),
        }];
    })
    .await;
    let out = cli(&app.address, &["runs", "--token", "wrong-token-0000"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("orchestrator: 401 Unauthorized"), "{err}");
    assert!(err.contains("--token or ORCHESTRATOR_TOKEN"), "{err}");
    let out = finish(
        orchestrator(&app.address)
            .args(["runs"])
            .env("ORCHESTRATOR_TOKEN", "0123456789abcdef-ci"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test]
async fn an_unreachable_server_exits_2_with_one_line() {
    let port = crate::helpers::unused_port();
    let server = format!("http://127.0.0.1:{port}");
    for args in [
        &["runs"][..],
        &["run", "greet", "--wait"],
        &["logs", "run_x", "-f"],
    ] {
        let out = cli(&server, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(
            err.trim(),
            format!("orchestrator: cannot reach the server at {server}: connection refused")
        );
    }
}

#[tokio::test]
async fn client_options_go_before_or_after_the_subcommand_and_no_config_file_is_read() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), "server: [\n").unwrap();
    for args in [
        &["--server", app.address.as_str(), "-o", "json", "runs"][..],
        &["runs", "--server", app.address.as_str(), "--output", "json"],
    ] {
        let out = finish(
            orchestrator("http://127.0.0.1:1")
                .current_dir(dir.path())
                .args(args),
        )
        .await;
        assert_eq!(json_out(&out)["items"], json!([]), "{args:?}");
    }
}

#[tokio::test]
async fn the_server_starts_with_the_clients_environment_variables_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let env = [
        ("ORCHESTRATOR_URL", "http://127.0.0.1:1"),
        ("ORCHESTRATOR_TOKEN", "some-token"),
    ];
    let server = ServerProcess::start_with_env(&config, "-config", &env);
    let out = finish(orchestrator(&server.address).args(["runs", "-o", "json"])).await;
    assert_eq!(json_out(&out)["items"], json!([]));
    assert_eq!(server.terminate().code(), Some(0));
}

#[tokio::test]
async fn every_subcommand_has_an_example_and_completions_cover_them() {
    let subcommands = [
        "apply",
        "run",
        "runs",
        "get",
        "logs",
        "approve",
        "reject",
        "cancel",
        "retry",
        "event",
        "completions",
    ];
    for name in subcommands {
        let out = cli("http://127.0.0.1:1", &[name, "--help"]).await;
        assert_eq!(out.status.code(), Some(0), "{name}");
        assert!(
            stdout(&out).contains("Example:\n  orchestrator "),
            "{name}: {}",
            stdout(&out)
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = cli("http://127.0.0.1:1", &["completions", shell]).await;
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = stdout(&out);
        assert!(
            subcommands.iter().all(|s| script.contains(s)),
            "{shell}: {script}"
        );
    }
    let out = cli("http://127.0.0.1:1", &["completions", "tcsh"]).await;
    assert_eq!(out.status.code(), Some(2));
}

/// `orchestrator runs` with a terminal as its standard output (through `script`).
fn runs_on_a_terminal(server: &str, no_color: Option<&str>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("script");
    let line = format!("{} runs", env!("CARGO_BIN_EXE_orchestrator"));
    command
        .args(["-qec", &line, "/dev/null"])
        .env("ORCHESTRATOR_URL", server)
        .env_remove("ORCHESTRATOR_TOKEN")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    command
}

#[tokio::test]
async fn colors_only_on_a_terminal_and_never_with_no_color() {
    let app = spawn_app().await;
    app.create_workflow(&greet()).await;
    let run = app.start_run("greet", json!({"who": "ada"})).await;
    app.wait_for_status(&run, "SUCCEEDED").await;
    let green = "\x1b[32mSUCCEEDED\x1b[0m";
    let out = finish(&mut runs_on_a_terminal(&app.address, None)).await;
    assert!(stdout(&out).contains(green), "{:?}", stdout(&out));
    let out = finish(&mut runs_on_a_terminal(&app.address, Some(""))).await;
    assert!(
        stdout(&out).contains(green),
        "an empty NO_COLOR does not count"
    );
    let out = finish(&mut runs_on_a_terminal(&app.address, Some("1"))).await;
    assert!(stdout(&out).contains(&run), "{:?}", stdout(&out));
    assert!(!stdout(&out).contains('\x1b'), "{:?}", stdout(&out));
    let out = finish(
        orchestrator(&app.address)
            .env_remove("NO_COLOR")
            .arg("runs"),
    )
    .await;
    assert!(stdout(&out).contains(&run));
    assert!(!stdout(&out).contains('\x1b'), "piped: {:?}", stdout(&out));
}
