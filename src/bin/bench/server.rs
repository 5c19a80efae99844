//! The orchestrator under test, as a separate process (this binary in `__serve` mode, which
//! starts the server exactly as `main` does), so its memory can be read from `/proc`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// A running server process.
pub struct Server {
    child: Child,
    pub url: String,
    /// Whether the store is PostgreSQL (its own processes do the database's work).
    postgres: bool,
    dir: tempfile::TempDir,
    /// The PostgreSQL database made for this server (dropped after it, as fields drop
    /// after [`Server`]'s own `drop` has stopped the process).
    database: Option<Database>,
}

/// A database of its own on a PostgreSQL cluster, so that no scenario meets another's (or
/// an earlier run's) runs; dropped with this value.
struct Database {
    admin: String,
    name: String,
    /// Its DSN: `admin`'s, with the database replaced.
    dsn: String,
    /// Its directory in the cluster's data directory, and the cluster's write-ahead log
    /// (read from disk like the embedded store's files; zero when they cannot be read).
    files: PathBuf,
    wal: PathBuf,
}

impl Database {
    /// Creates one on the cluster that `admin` (a `postgres://` URL, as the server's
    /// `database.dsn`) connects to.
    fn create(admin: &str) -> anyhow::Result<Self> {
        let mut url = url::Url::parse(admin)
            .ok()
            .filter(|url| matches!(url.scheme(), "postgres" | "postgresql"))
            .context("--dsn is a postgres:// URL")?;
        let name = format!("bench_{}", orchestrator::ids::new("").to_lowercase());
        execute(admin, format!("CREATE DATABASE {name}"))
            .context("creating the scenario's database (the DSN's user needs CREATEDB)")?;
        let mut database = Self {
            admin: admin.to_owned(),
            name,
            dsn: String::new(),
            files: PathBuf::new(),
            wal: PathBuf::new(),
        };
        let (data, oid) = query_where(admin, &database.name)?;
        database.files = Path::new(&data).join("base").join(oid.to_string());
        database.wal = Path::new(&data).join("pg_wal");
        url.set_path(&database.name);
        database.dsn = url.to_string();
        Ok(database)
    }

    /// Bytes of its files and of the cluster's write-ahead log.
    fn bytes(&self) -> (u64, u64) {
        (dir_bytes(&self.files), dir_bytes(&self.wal))
    }
}

/// Bytes of the files directly in `dir` (zero when it cannot be read).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The cluster's data directory and the oid of database `name`, asked on `dsn`.
fn query_where(dsn: &str, name: &str) -> anyhow::Result<(String, u32)> {
    let name = name.to_owned();
    with_client(dsn, move |client| async move {
        let row = client
            .query_one(
                "SELECT current_setting('data_directory'), oid FROM pg_database \
                 WHERE datname = $1",
                &[&name],
            )
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    })
}

impl Drop for Database {
    fn drop(&mut self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = execute(&self.admin, drop) {
            eprintln!(
                "could not drop the scenario's database {}: {e:#}",
                self.name
            );
        }
    }
}

/// Runs `sql` on `dsn`.
fn execute(dsn: &str, sql: String) -> anyhow::Result<()> {
    with_client(dsn, move |client| async move {
        client.batch_execute(&sql).await?;
        Ok(())
    })
}

/// Runs `work` with a connection to `dsn`, on a thread and runtime of its own (callers are
/// synchronous code inside the bench's runtime).
fn with_client<T, F, Fut>(dsn: &str, work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let dsn = dsn.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
                let driver = tokio::spawn(connection);
                let out = work(client).await;
                let _ = driver.await;
                out
            })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the database thread panicked"))?
}

/// Writes the benchmark config: a fresh embedded store, free port, quiet logs.
fn write_config(dir: &Path, dsn: Option<&str>) -> anyhow::Result<PathBuf> {
    let path = dir.join("config.yaml");
    let extra = std::env::var("BENCH_DATABASE")
        .map(|extra| format!("  {extra}\n"))
        .unwrap_or_default();
    let database = match dsn {
        Some(dsn) => format!("  dsn: {dsn}\n{extra}"),
        None => format!(
            "  path: {}\n  synchronous: normal\n{extra}",
            dir.join("bench.db").display(),
        ),
    };
    let text = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\ndatabase:\n{database}engine:\n  max_active_runs: 100000\n  poll_interval: 200ms\nlimits:\n  max_page: 500\nlog:\n  level: info\n"
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Starts this binary in `__serve` mode on `config` and waits until it listens; returns
/// the process and its URL.
fn spawn(config: &Path) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("__serve")
        .arg(config)
        // The level `config.yaml` ships with: what a span or line costs at it is measured.
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the server process")?;
    let stderr = child.stderr.take().context("server stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("address=").nth(1) {
                let _ = tx.send(
                    rest.chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect::<String>(),
                );
            } else if line.contains("ERROR") {
                eprintln!("server: {line}");
            }
        }
    });
    // A store of many gigabytes takes a while to open.
    let Ok(address) = rx.recv_timeout(Duration::from_secs(120)) else {
        let _ = child.kill();
        bail!("the server did not start");
    };
    Ok((child, format!("http://{address}")))
}

impl Server {
    /// Starts a server on a fresh store (or on a fresh database on `dsn`'s cluster) and
    /// waits until it listens.
    pub fn start(dsn: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let database = dsn.map(Database::create).transpose()?;
        let config = write_config(dir.path(), database.as_ref().map(|d| d.dsn.as_str()))?;
        let (child, url) = spawn(&config)?;
        Ok(Self {
            child,
            url,
            postgres: dsn.is_some(),
            dir,
            database,
        })
    }

    /// Stops the server with SIGTERM (unless it has stopped) and starts it again on the
    /// same store and config (on another free port: `url` changes).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let status = match self.child.try_wait()? {
            Some(status) => status,
            None => self.stop()?,
        };
        if !status.success() {
            bail!("the server stopped with {status}");
        }
        let (child, url) = spawn(&self.dir.path().join("config.yaml"))?;
        self.child = child;
        self.url = url;
        Ok(())
    }

    /// Keeps the server's directory (store and config) when it is dropped; returns its
    /// path.
    pub fn keep(&mut self) -> PathBuf {
        let dir = std::mem::replace(
            &mut self.dir,
            tempfile::TempDir::new().expect("a temporary directory"),
        );
        dir.keep()
    }

    /// The embedded store's database file.
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("bench.db")
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// CPU time the server process has used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.child.id())
    }

    /// CPU time PostgreSQL's processes on this machine have used so far (the bench's
    /// cluster: its backends live as long as the server's pool), in seconds; zero on the
    /// embedded store.
    pub fn store_cpu_seconds(&self) -> f64 {
        if !self.postgres {
            return 0.0;
        }
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0.0;
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "postgres")
            })
            .map(process_cpu_seconds)
            .sum()
    }
}

/// CPU time process `pid` has used so far (user + system), in seconds; zero once it is gone.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces;
    // utime and stime are the 14th and 15th fields, in ticks of USER_HZ (100 on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

impl Server {
    /// Bytes of the store and of its write-ahead log: the embedded store's database file and
    /// WAL (zero for a file that does not exist), or the PostgreSQL database's files and the
    /// cluster's WAL (all databases'; bounded by `max_wal_size`, not by this store).
    pub fn store_bytes(&self) -> (u64, u64) {
        if let Some(database) = &self.database {
            return database.bytes();
        }
        let size =
            |name: &str| std::fs::metadata(self.dir.path().join(name)).map_or(0, |m| m.len());
        (size("bench.db"), size("bench.db-wal"))
    }

    /// Stops the server with SIGTERM, as an operator would, and waits for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
