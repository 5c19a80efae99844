//! Connections of the embedded store: one writer thread with group commit, and a small
//! pool of read connections used from `spawn_blocking`.
//!
//! The writer owns the only write connection. It takes every job queued at the moment it
//! becomes free (up to [`MAX_BATCH`]), runs each inside its own savepoint of one
//! transaction, commits once, and only then answers the callers: a caller never hears
//! "done" for data that is not committed, and a failing job rolls back alone without
//! spoiling its batch. SQLite calls therefore never block the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::StoreError;

/// Most jobs sharing one commit.
const MAX_BATCH: usize = 512;

/// A unit of work for the writer: run inside a savepoint, answered after the commit.
trait Job: Send {
    /// Runs the work; false when it failed and its savepoint must be rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller with the work's result, or with `commit`'s error.
    fn answer(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Pending<R, F> {
    work: Option<F>,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> Job for Pending<R, F>
where
    R: Send,
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = match self.work.take() {
            Some(work) => work(conn),
            None => Err(StoreError::Unavailable("job ran twice".into())),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit: Result<(), StoreError>) {
        let result = match (commit, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Unavailable("job did not run".into())),
        };
        let _ = self.reply.send(result);
    }
}

/// Page cache of the write connection, in KiB: the working set of live runs (their
/// head, step and log pages) stays hot.
pub const WRITER_CACHE_KIB: u32 = 8192;
/// Page cache of each read and checkpoint connection, in KiB: reads are point lookups
/// that the operating system's file cache serves well, and every connection's cache
/// counts towards the server's resident memory.
pub const READER_CACHE_KIB: u32 = 2048;

/// Opens a connection with the pragmas every connection of the store uses and a page
/// cache of `cache_kib`.
pub fn open(path: &Path, synchronous_full: bool, cache_kib: u32) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(unavailable)?;
    let synchronous = if synchronous_full { "FULL" } else { "NORMAL" };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{cache_kib};"
    ))
    .map_err(unavailable)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Maps a SQLite error to the store's vocabulary.
pub fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The write side: a queue feeding the writer thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::UnboundedSender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer thread on `conn`. It stops when every `Writer` clone is dropped.
    pub fn start(mut conn: Connection) -> Result<Self, StoreError> {
        let (jobs, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(&mut conn, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `work` in the next group commit and returns its result once committed.
    pub async fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Pending {
            work: Some(work),
            result: None,
            reply,
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }
}

fn run(conn: &mut Connection, mut rx: mpsc::UnboundedReceiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(conn, &mut batch);
    }
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let err = unavailable(e);
        for job in batch.drain(..) {
            job.answer(Err(err.clone()));
        }
        return;
    }
    let mut done = Vec::with_capacity(batch.len());
    for mut job in batch.drain(..) {
        if let Err(e) = execute_cached(conn, "SAVEPOINT job") {
            job.answer(Err(unavailable(e)));
            continue;
        }
        let cleanup = if job.run(conn) {
            execute_cached(conn, "RELEASE job")
        } else {
            execute_cached(conn, "ROLLBACK TO job")
                .and_then(|()| execute_cached(conn, "RELEASE job"))
        };
        match cleanup {
            Ok(()) => done.push(job),
            Err(e) => job.answer(Err(unavailable(e))),
        }
    }
    let outcome = conn.execute_batch("COMMIT").map_err(unavailable);
    if outcome.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for job in done {
        job.answer(outcome.clone());
    }
}

/// Runs a statement without parameters from the connection's statement cache (savepoint
/// statements run twice per job; parsing them each time showed up in profiles).
fn execute_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Copies the WAL back into the database from its own connection and thread, so that the
/// writer never waits for a checkpoint's copying and fsync (the writer's own automatic
/// checkpoints are turned off). Passive checkpoints never block the writer or readers.
pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Checkpoints `path` every `every` until dropped.
    pub fn start(
        path: &Path,
        synchronous_full: bool,
        every: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let conn = open(path, synchronous_full, READER_CACHE_KIB)?;
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let (stopped, wake) = &*signal;
                let mut done = stopped.lock().unwrap_or_else(|p| p.into_inner());
                while !*done {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                    done = wake
                        .wait_timeout(done, every)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start checkpointer: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        if let Ok(mut done) = stopped.lock() {
            *done = true;
        }
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Read connections handed out one caller at a time.
#[derive(Clone)]
pub struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// `count` read connections to `path`.
    pub fn open(path: &Path, count: usize) -> Result<Self, StoreError> {
        let conns = (0..count)
            .map(|_| open(path, false, READER_CACHE_KIB))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            idle: Arc::new(Mutex::new(conns)),
            permits: Arc::new(Semaphore::new(count)),
        })
    }

    /// Runs `work` on a read connection off the async runtime.
    pub async fn read<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let idle = self.idle.clone();
        tokio::task::spawn_blocking(move || {
            // The permit guarantees an idle connection exists.
            let conn = idle
                .lock()
                .map_err(|_| StoreError::Unavailable("reader pool poisoned".into()))?
                .pop()
                .ok_or_else(|| StoreError::Unavailable("no idle reader".into()))?;
            let result = work(&conn);
            if let Ok(mut idle) = idle.lock() {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?
    }
}
