//! The downstream every benchmark calls: a small actix-web server on its own thread that
//! answers `GET /ok` with a small JSON body, counts calls, and signals when a run's last
//! step arrives (`/ok?done=<run id>`), so the driver learns of completions without polling.
//! `GET /hold` answers the same body only once [`Target::release`] was called (or after
//! five minutes), to keep a run's step in flight.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tokio::sync::oneshot;

/// Shared state of the target.
#[derive(Default)]
pub struct Target {
    pub calls: AtomicU64,
    waiting: Mutex<HashMap<String, oneshot::Sender<()>>>,
    released: AtomicBool,
    release: tokio::sync::Notify,
}

impl Target {
    /// Registers interest in the last step of `run_id`.
    pub fn expect_done(&self, run_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(run_id.to_owned(), tx);
        }
        rx
    }

    /// Lets every `/hold` call answer, those waiting and all later ones.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.release.notify_waiters();
    }

    /// Number of calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

async fn ok(req: HttpRequest, target: web::Data<Arc<Target>>) -> HttpResponse {
    target.calls.fetch_add(1, Ordering::Relaxed);
    if let Some(run) = req.query_string().strip_prefix("done=") {
        let waiter = target.waiting.lock().ok().and_then(|mut w| w.remove(run));
        if let Some(tx) = waiter {
            let _ = tx.send(());
        }
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"ok":true,"n":1}"#)
}

async fn hold(target: web::Data<Arc<Target>>) -> HttpResponse {
    let released = target.release.notified();
    if !target.released.load(Ordering::SeqCst) {
        tokio::select! {
            _ = released => {}
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
        }
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"ok":true,"n":1}"#)
}

/// Starts the target on a free port with `workers` threads; returns its base URL.
pub fn start(workers: usize) -> std::io::Result<(String, Arc<Target>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let target = Arc::new(Target::default());
    let data = web::Data::new(target.clone());
    std::thread::Builder::new()
        .name("target".into())
        .spawn(move || {
            let system = actix_web::rt::System::new();
            let served = system.block_on(async move {
                HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/ok", web::get().to(ok))
                        .route("/hold", web::get().to(hold))
                })
                .workers(workers)
                .disable_signals()
                .listen(listener)?
                .run()
                .await
            });
            if let Err(e) = served {
                eprintln!("target server stopped: {e}");
            }
        })?;
    Ok((url, target))
}
