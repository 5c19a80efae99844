//! The `clients` scenario: W10 runs driven as API users drive them — each client starts a
//! run and then either reads it every 5 ms until it has ended (`GET /v1/runs/{id}`) or
//! waits on its log stream for the `end` event — beside the raw loop against the same
//! target, which is nginx (Debian's package) when it is installed: the fastest server this
//! machine runs, so the ratio does not flatter the engine.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::scenarios::{Client, Rate};
use crate::server::Server;

/// How a client learns that its run has ended.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// `GET /v1/runs/{id}` every `0` until the status is terminal.
    Poll(Duration),
    /// The run's log stream, to its `end` event.
    Stream,
}

/// What one window measured.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub rate: Rate,
    /// Reads per run (polling clients only).
    pub polls_per_run: f64,
    /// Median time from start to seen-ended, in milliseconds.
    pub run_ms: f64,
}

/// `in_flight` clients, each starting W10 runs one after another and waiting as `wait`
/// says, for `window`.
pub async fn closed_loop(
    server: &Server,
    client: &Client,
    workflow: &str,
    in_flight: usize,
    window: Duration,
    wait: Wait,
) -> anyhow::Result<Window> {
    let done = Arc::new(AtomicU64::new(0));
    let polls = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let cpu_before = server.cpu_seconds();
    let store_cpu_before = server.store_cpu_seconds();
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (client, workflow) = (client.clone(), workflow.to_owned());
            let (done, polls) = (done.clone(), polls.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                while Instant::now() < deadline {
                    let begun = Instant::now();
                    let run = client.start(&workflow, "clients").await?;
                    match wait {
                        Wait::Poll(every) => polls
                            .fetch_add(client.poll_every(&run, every).await?, Ordering::Relaxed),
                        Wait::Stream => {
                            client.stream_terminal(&run).await?;
                            0
                        }
                    };
                    times.push(begun.elapsed().as_secs_f64() * 1000.0);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(times)
            })
        })
        .collect();
    let mut peak_rss = 0;
    while workers.iter().any(|w| !w.is_finished()) {
        peak_rss = peak_rss.max(server.rss());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut times = Vec::new();
    for w in workers {
        times.extend(w.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    let runs = done.load(Ordering::Relaxed) as f64;
    times.sort_by(f64::total_cmp);
    Ok(Window {
        rate: Rate {
            runs_per_s: runs / secs,
            steps_per_s: runs * 10.0 / secs,
            peak_rss,
            cpu_us_per_step: (server.cpu_seconds() - cpu_before) * 1e6 / (runs * 10.0).max(1.0),
            store_cpu_us_per_step: (server.store_cpu_seconds() - store_cpu_before) * 1e6
                / (runs * 10.0).max(1.0),
            ..Rate::default()
        },
        polls_per_run: polls.load(Ordering::Relaxed) as f64 / runs.max(1.0),
        run_ms: times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
    })
}

/// nginx answering `GET /ok` with the in-process target's body, on a free port, with its
/// files in a temporary directory; stopped when dropped.
pub struct Nginx {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

/// Where Debian installs nginx.
const NGINX: &str = "/usr/sbin/nginx";

impl Nginx {
    /// nginx when `choice` is `nginx` and it is installed, else the in-process target at
    /// `builtin`: the server (kept alive by the caller), its URL and its name.
    pub fn or_builtin(
        choice: &str,
        builtin: &str,
    ) -> anyhow::Result<(Option<Self>, String, &'static str)> {
        if choice == "nginx" && Self::available() {
            let nginx = Self::start()?;
            let url = nginx.url.clone();
            Ok((Some(nginx), url, "nginx"))
        } else {
            Ok((None, builtin.to_owned(), "the in-process target"))
        }
    }

    /// True when nginx is installed (`apt-get install nginx-light`).
    pub fn available() -> bool {
        Path::new(NGINX).exists()
    }

    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let d = dir.path().display();
        let conf = format!(
            "worker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log crit;\n\
             daemon off;\nevents {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port};\n    location /ok {{\n\
                 default_type application/json;\n      return 200 '{{\"ok\":true,\"n\":1}}';\n    }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nginx")?;
        let nginx = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: nginx's graceful stop, which also ends its worker processes.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
