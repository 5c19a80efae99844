//! Connections of the embedded store: one writer thread with group commit, and a few
//! reader threads, each with its own read connection.
//!
//! The writer owns the only write connection. It takes every job queued at the moment it
//! becomes free (up to [`MAX_BATCH`]), runs each inside its own savepoint of one
//! transaction, commits once, and only then answers the callers: a caller never hears
//! "done" for data that is not committed, and a failing job rolls back alone without
//! spoiling its batch. SQLite calls therefore never block the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

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
            None => Err(StoreError::unavailable("job ran twice")),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit: Result<(), StoreError>) {
        let result = match (commit, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::unavailable("job did not run")),
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
    StoreError::unavailable_by("SQLite", e)
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
            .map_err(|e| StoreError::unavailable_by("cannot start the writer thread", e))?;
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
            .map_err(|_| StoreError::unavailable("the writer has stopped"))?;
        rx.await
            .map_err(|_| StoreError::unavailable("the writer has stopped"))?
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
            .map_err(|e| StoreError::unavailable_by("cannot start the checkpoint thread", e))?;
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

/// A read for one of the reader threads; it answers its caller itself.
type Read = Box<dyn FnOnce(&Connection) + Send>;

/// Read connections, each owned by its own thread. Reads wait in one shared queue and the
/// first idle thread takes the next. Fixed threads rather than `spawn_blocking`: the
/// blocking pool starts a new thread whenever none is idle at that instant, and each
/// thread it keeps alive holds a stack and allocator caches (dozens of them after a burst
/// of 100,000 run starts).
#[derive(Clone)]
pub struct Readers {
    reads: std::sync::mpsc::Sender<Read>,
}

impl Readers {
    /// `count` read connections to `path`, each on its own thread. The threads stop when
    /// every `Readers` clone is dropped.
    pub fn open(path: &Path, count: usize) -> Result<Self, StoreError> {
        let (reads, queue) = std::sync::mpsc::channel::<Read>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..count.max(1) {
            let conn = open(path, false, READER_CACHE_KIB)?;
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{n}"))
                .spawn(move || serve_reads(&conn, &queue))
                .map_err(|e| StoreError::unavailable_by("cannot start a reader thread", e))?;
        }
        Ok(Self { reads })
    }

    /// Runs `work` on a read connection off the async runtime.
    pub async fn read<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let read: Read = Box::new(move |conn| {
            let _ = reply.send(work(conn));
        });
        self.reads
            .send(read)
            .map_err(|_| StoreError::unavailable("the store is closed"))?;
        answer
            .await
            .map_err(|_| StoreError::unavailable("a read failed without an answer"))?
    }
}

/// A reader thread: takes reads from the shared queue until every sender is gone. Only the
/// thread waiting for the next read holds the queue's lock; a read that panics loses its
/// answer (its caller gets an error), not the thread.
fn serve_reads(conn: &Connection, queue: &Mutex<std::sync::mpsc::Receiver<Read>>) {
    loop {
        let next = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(read) = next else { return };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(conn)));
    }
}
