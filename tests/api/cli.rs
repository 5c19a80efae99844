//! The binary's command line: config errors, environment overrides, offline validation.

use std::process::Command;

use crate::helpers::{ServerProcess, write_config};

fn orchestrator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
}

#[test]
fn a_missing_config_file_stops_startup_with_one_clear_line() {
    let out = orchestrator()
        .args(["-config", "/nonexistent/config.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/config.yaml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn a_malformed_config_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "server:\n  port: lots\n").unwrap();
    let out = orchestrator().arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("server.port"),
        "{stderr}"
    );
    std::fs::write(&path, "server: [\n").unwrap();
    let out = orchestrator().arg("--config").arg(&path).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed YAML"));
}

#[test]
fn a_broken_operator_schema_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("schema.json"), "{\"type\": 12}").unwrap();
    let extra = format!(
        "policy:\n  workflow_schema: {}\n",
        dir.path().join("schema.json").display()
    );
    let config = write_config(dir.path(), &extra);
    let out = orchestrator().arg("-config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("schema.json") && stderr.contains("not a valid JSON Schema"),
        "{stderr}"
    );
}

#[tokio::test]
async fn environment_variables_override_and_fill_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "server:\n  port: 1\ndatabase:\n  path: ${ORCH_TEST_DB}\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = orchestrator()
        .arg("-config")
        .arg(&config)
        .env("ORCHESTRATOR_SERVER__PORT", port.to_string())
        .env("ORCH_TEST_DB", dir.path().join("env.db"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let health =
        crate::helpers::wait_until("the server to listen on the overridden port", || async {
            client
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                .ok()
        })
        .await;
    assert_eq!(health.status(), 200);
    assert!(
        dir.path().join("env.db").exists(),
        "the ${{VAR}} path was used"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn validate_prints_each_violation_with_its_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "name: ok\nsteps:\n  - name: a\n    action: transform\n    input: {set: {x: 1}}\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"name": "bad", "steps": [{"name": "a", "action": "transform", "input": {"value": 1}}, {"name": "a", "action": "warp"}]}"#).unwrap();
    let out = orchestrator()
        .current_dir(dir.path())
        .arg("validate")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("good.yaml: valid"));
    let out = orchestrator()
        .current_dir(dir.path())
        .arg("validate")
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("/steps/1/name: duplicate step name"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/steps/1/action: unknown action"),
        "{stdout}"
    );
}

#[tokio::test]
async fn both_config_flag_spellings_start_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    for flag in ["-config", "--config"] {
        let server = ServerProcess::start_with_flag(&config, flag);
        let health = reqwest::get(format!("{}/health", server.address))
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "{flag}");
        assert_eq!(server.terminate().code(), Some(0), "{flag}");
    }
}
