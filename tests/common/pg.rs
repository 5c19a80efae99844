//! PostgreSQL for tests: a fresh database per test on the cluster `scripts/test.sh`
//! started (`TEST_POSTGRES_DSN`), and private clusters for tests that stop and
//! restart the server. Tests that need PostgreSQL fail, never skip, without it.
#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

/// The superuser DSN of the test cluster; panics with directions when it is not set.
pub fn admin_dsn() -> String {
    std::env::var("TEST_POSTGRES_DSN").unwrap_or_else(|_| {
        panic!(
            "TEST_POSTGRES_DSN is not set: run the tests with scripts/test.sh, \
             which starts a throwaway PostgreSQL cluster (PostgreSQL tests never skip)"
        )
    })
}

/// Creates an empty database on the cluster at `admin` and returns its DSN.
pub async fn fresh_database_on(admin: &str) -> String {
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster at {admin}: {e}"));
    let driver = tokio::spawn(connection);
    let name = format!("t_{}", orchestrator::ids::new("").to_lowercase());
    let mut last = None;
    for _ in 0..10 {
        match client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
        {
            Ok(()) => {
                last = None;
                break;
            }
            // Concurrent CREATE DATABASE can collide on the template; try again.
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(e) = last {
        panic!("cannot create a test database: {e}");
    }
    drop(client);
    let _ = driver.await;
    let (base, _) = admin.rsplit_once('/').expect("DSN has a database path");
    format!("{base}/{name}")
}

/// A fresh database on the shared test cluster.
pub async fn fresh_database() -> String {
    fresh_database_on(&admin_dsn()).await
}

/// A private PostgreSQL cluster that a test may stop and start.
pub struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    user: Option<String>,
    pub port: u16,
}

impl Cluster {
    /// Creates and starts a cluster on a free port, like `scripts/pg-cluster.sh` does.
    pub fn start() -> Self {
        admin_dsn();
        let bin =
            PathBuf::from(std::env::var("TEST_POSTGRES_BIN").expect("TEST_POSTGRES_BIN is set"));
        let user = std::env::var("TEST_POSTGRES_USER")
            .ok()
            .filter(|u| !u.is_empty());
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(user) = &user {
            let ok = Command::new("chown")
                .arg(user)
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(ok.success(), "chown of the cluster directory failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let cluster = Self {
            dir,
            bin,
            user,
            port,
        };
        let data = cluster.dir.path().join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        cluster.start_server();
        cluster
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let status = match &self.user {
            Some(user) => Command::new("runuser")
                .args(["-u", user, "--"])
                .arg(&program)
                .args(args)
                .output(),
            None => Command::new(&program).args(args).output(),
        }
        .unwrap_or_else(|e| panic!("{} cannot run: {e}", program.display()));
        assert!(
            status.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Starts (again) the server on the same port and data.
    pub fn start_server(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} \
             -c max_connections=200 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-w",
                "-t",
                "60",
                "-l",
                &log,
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server at once (as a crash would), keeping its data.
    pub fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// The superuser DSN of this cluster.
    pub fn admin_dsn(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let program = self.bin.join("pg_ctl");
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = match &self.user {
            Some(user) => Command::new("runuser")
                .args(["-u", user, "--"])
                .arg(&program)
                .args(args)
                .output(),
            None => Command::new(&program).args(args).output(),
        };
    }
}
