//! What the container image relies on from the binary: `orchestrator health` as its health
//! check, and start-up failures (no CA certificates, no database) that say what to fix.

use std::process::Output;

use crate::helpers::{spawn_app, write_config};

async fn orchestrator(args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_health_command_probes_the_configured_port_and_fails_when_nothing_answers() {
    let app = spawn_app().await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let config = write_config(app.dir.path(), "");
    let config = config.to_str().unwrap();
    let out = orchestrator(
        &["--config", config, "health"],
        &[("ORCHESTRATOR_SERVER__PORT", &port)],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains(&format!("127.0.0.1:{port}/health")) && stdout.contains("200"),
        "{stdout}"
    );
    let ready = format!("{}/ready", app.address);
    let out = orchestrator(&["health", "--url", &ready], &[]).await;
    assert!(out.status.success(), "{out:?}");
    let closed = free_port().to_string();
    let out = orchestrator(
        &["--config", config, "health"],
        &[("ORCHESTRATOR_SERVER__PORT", &closed)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[tokio::test]
async fn without_ca_certificates_the_server_stops_at_start_and_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let empty_file = dir.path().join("empty.pem");
    std::fs::write(&empty_file, "").unwrap();
    let empty_dir = dir.path().join("certs");
    std::fs::create_dir(&empty_dir).unwrap();
    let missing = dir.path().join("missing.pem");
    for (file, says) in [(&empty_file, None), (&missing, Some("missing.pem"))] {
        let out = orchestrator(
            &["--config", config.to_str().unwrap()],
            &[
                ("SSL_CERT_FILE", file.to_str().unwrap()),
                ("SSL_CERT_DIR", empty_dir.to_str().unwrap()),
            ],
        )
        .await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("no CA certificates found")
                && stderr.contains("install the ca-certificates package")
                && stderr.contains("SSL_CERT_FILE"),
            "{stderr}"
        );
        if let Some(path) = says {
            assert!(stderr.contains(path), "{stderr}");
        }
    }
}

#[tokio::test]
async fn an_unreachable_postgres_stops_start_up_with_the_cause_and_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let dsn = format!(
        "postgres://orchestrator@127.0.0.1:{}/orchestrator",
        free_port()
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("server:\n  port: 0\ndatabase:\n  dsn: {dsn}\n"),
    )
    .unwrap();
    let out = orchestrator(&["--config", config.to_str().unwrap()], &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot connect to PostgreSQL")
            && stderr.contains("refused")
            && stderr.contains("check database.dsn"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("cannot connect").count(),
        1,
        "each cause once: {stderr}"
    );
}

#[tokio::test]
async fn a_port_in_use_stops_start_up_naming_the_keys_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let config = write_config(dir.path(), "");
    let out = orchestrator(
        &["--config", config.to_str().unwrap()],
        &[("ORCHESTRATOR_SERVER__PORT", &port)],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("server.host, server.port: cannot listen on 127.0.0.1:")
            && last.contains(&port),
        "{stderr}"
    );
}
