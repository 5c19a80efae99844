//! One live process per `server.id` on a PostgreSQL database: the process holds a session
//! advisory lock keyed by its id on a connection of its own, for as long as it runs.
//!
//! A process that dies (even by `kill -9`) closes its connection, and PostgreSQL releases
//! the lock at once, so its replacement takes the id within moments; a second live
//! process with the same id finds the lock held and does not start. When the connection
//! holding the lock drops while the server runs, it is taken again.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use crate::store::StoreError;
use crate::store::lifecycle::stable_key;

/// How long start-up waits for an id's lock: a killed predecessor's session may take a
/// moment to end.
const PATIENCE: Duration = Duration::from_secs(5);
/// Between two tries of a held lock.
const RETRY: Duration = Duration::from_millis(100);

/// The task holding an identity's lock; releases it when dropped.
pub struct Held(JoinHandle<()>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Takes the lock of server id `id` and keeps it; `Conflict` when another live process
/// holds it.
pub async fn hold(config: tokio_postgres::Config, id: &str) -> Result<Held, StoreError> {
    let (first, taken) = oneshot::channel();
    let task = tokio::spawn(keep(config, id.to_owned(), first));
    match taken.await {
        Ok(Ok(())) => Ok(Held(task)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(StoreError::unavailable("the identity task ended")),
    }
}

async fn keep(
    config: tokio_postgres::Config,
    id: String,
    first: oneshot::Sender<Result<(), StoreError>>,
) {
    let mut first = Some(first);
    loop {
        match take(&config, &id).await {
            Ok((client, connection)) => {
                match first.take() {
                    Some(reply) => {
                        let _ = reply.send(Ok(()));
                    }
                    None => tracing::info!(server_id = %id, "server identity held again"),
                }
                let _ = connection.await;
                drop(client);
                tracing::warn!(server_id = %id, "lost the connection holding the server identity");
            }
            Err(e) => match first.take() {
                Some(reply) => {
                    let _ = reply.send(Err(e));
                    return;
                }
                None => tracing::error!(
                    server_id = %id,
                    error = %crate::problems::chain(&e),
                    "cannot hold the server identity again"
                ),
            },
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Connects and takes the lock, trying for [`PATIENCE`]; the client and the task driving
/// its connection (which ends when the connection does).
async fn take(
    config: &tokio_postgres::Config,
    id: &str,
) -> Result<(tokio_postgres::Client, JoinHandle<()>), StoreError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| StoreError::unavailable_by("cannot connect to PostgreSQL", e))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let key = stable_key(&format!("orchestrator server.id {id}"));
    let give_up = Instant::now() + PATIENCE;
    loop {
        let held: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(super::db_error)?;
        if held {
            return Ok((client, driver));
        }
        if Instant::now() >= give_up {
            driver.abort();
            return Err(StoreError::Conflict(format!(
                "server.id {id:?} is held by another live server on this database; \
                 give each replica its own server.id"
            )));
        }
        tokio::time::sleep(RETRY).await;
    }
}
