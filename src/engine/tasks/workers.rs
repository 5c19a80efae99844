//! The workers seen polling, written to the store at most every [`REFRESH`] per worker (a
//! busy worker polls many times a second; `GET /v1/workers` needs only a recent time).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::now;
use crate::store::DynStore;

/// How often a worker that keeps polling the same queues is written again.
const REFRESH: Duration = Duration::from_secs(10);
/// Past this many remembered workers, those not seen within [`REFRESH`] are forgotten.
const REMEMBER: usize = 1024;

/// When each worker was last written, and with which queues.
#[derive(Default)]
pub struct Seen {
    written: Mutex<HashMap<String, (Vec<String>, Instant)>>,
}

impl Seen {
    /// Records that `worker` polls `queues`, unless it was written lately with the same.
    pub async fn record(&self, store: &DynStore, worker: &str, queues: &[String]) {
        let due = match self.written.lock() {
            Ok(mut written) => {
                let fresh = written
                    .get(worker)
                    .is_some_and(|(q, at)| q == queues && at.elapsed() < REFRESH);
                if !fresh {
                    if written.len() >= REMEMBER {
                        written.retain(|_, (_, at)| at.elapsed() < REFRESH);
                    }
                    written.insert(worker.to_owned(), (queues.to_vec(), Instant::now()));
                }
                !fresh
            }
            Err(_) => true,
        };
        if due && let Err(e) = store.record_worker(worker, queues, now()).await {
            tracing::warn!(worker, error = %e, "recording a worker failed");
        }
    }
}
