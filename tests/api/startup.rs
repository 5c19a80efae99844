//! Start-up failures of the store as an operator reads them: one line, each cause once,
//! naming the config key to look at and never the password (the port's are in
//! `tests/api/image.rs`).

use std::process::{Command, Output};

use crate::helpers::write_config;

fn start(config: &std::path::Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("-config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The line the server printed last (its log lines come before).
fn last_line(out: &Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().last().unwrap_or_default().to_owned()
}

#[test]
fn a_store_that_cannot_open_names_database_path_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let path = file.join("orchestrator.db");
    let config = write_config(dir.path(), "");
    let env = [("ORCHESTRATOR_DATABASE__PATH", path.to_str().unwrap())];
    let line = last_line(&start(&config, &env));
    assert!(line.contains("database.path"), "{line}");
    assert_eq!(line.matches("store unavailable").count(), 1, "{line}");
    assert_eq!(line.matches("store").count(), 1, "{line}");
}

#[test]
fn an_unreachable_database_is_named_once_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dsn = format!("postgres://nobody:hunter2secret@127.0.0.1:{port}/none");
    let config = write_config(dir.path(), "");
    let line = last_line(&start(&config, &[("ORCHESTRATOR_DATABASE__DSN", &dsn)]));
    assert!(line.contains("database.dsn"), "{line}");
    assert_eq!(line.matches("store unavailable").count(), 1, "{line}");
    assert!(
        !line.contains("hunter2secret"),
        "the password stays out: {line}"
    );
}
