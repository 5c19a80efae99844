//! Connections of the embedded store: one writer thread with group commit, and a few
//! reader threads, each with its own read connection.
//!
//! The writer owns the only write connection. It takes every job queued at the moment it
//! becomes free (up to [`MAX_BATCH`]), runs each inside its own savepoint of one
//! transaction, commits once, and only then answers the callers: a caller never hears
//! "done" for data that is not committed, and a failing job rolls back alone without
//! spoiling its batch. SQLite calls therefore never block the async runtime.
//!
//! A job that can only refuse before its first write (a guarded commit of a run: its
//! guard is its first statement) runs without a savepoint: a savepoint makes SQLite copy
//! every page the job changes that an earlier job of the batch had changed, and that copy
//! was 5 % of the server's CPU. Its refusal leaves nothing to undo; a database failure
//! after its first write cannot be undone alone, so it rolls the whole batch back: the
//! jobs that ran in it are answered with the failure (the engine retries its commits),
//! and the jobs not yet run go into the next transaction. After any failed write, every
//! job gets its savepoint again for [`SAVEPOINTS_AFTER_FAILURE`] (renewed by each further
//! failure), so a commit that fails each time it is tried fails alone on its retries
//! instead of taking its batch with it each time.
//!
//! The WAL stays bounded. A checkpoint thread copies it back into the database with
//! passive checkpoints, which never block anyone but cannot rewind the WAL while readers
//! and the writer never pause (SQLite's checkpoint starvation). So when the WAL holds
//! frames past half its bound (SQLite's WAL hook tells the writer after every commit),
//! the writer itself, between two batches, runs a `RESTART` checkpoint: it is the only
//! writer, so it waits only for the short reads in progress, most frames are already
//! copied back, and the next batch writes the WAL again from its start, over blocks the
//! file already has (truncating it instead made the file system allocate them again at
//! every rewind). If reads keep it busy, it tries again shortly; once the WAL reaches
//! three quarters of the bound, writes wait until the rewind succeeds (one more batch
//! still fits under the bound). A clean stop truncates the file to zero.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::store::{StoreError, WriteHealth, WriteStats};

/// How long a connection waits for a lock another holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long every job runs in its own savepoint after a failed write.
const SAVEPOINTS_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Most jobs sharing one commit.
const MAX_BATCH: usize = 512;

/// How a job's work went.
enum Ran {
    Done,
    /// Refused by a rule (a guard, a missing row): its savepoint is rolled back.
    Refused,
    /// The database failed (disk full, read-only, I/O): rolled back, and the store's
    /// write health says why.
    Broken(String),
}

/// A unit of work for the writer: run inside a savepoint (unless it refuses only before
/// its first write), answered after the commit.
trait Job: Send {
    /// True when the job refuses (with an error that is not a database failure) only
    /// before its first write, so it needs no savepoint.
    fn refuses_first(&self) -> bool;
    /// Runs the work; anything but [`Ran::Done`] rolls its savepoint back.
    fn run(&mut self, conn: &Connection) -> Ran;
    /// Answers the caller with the work's result, or with `commit`'s error.
    fn answer(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Pending<R, F> {
    refuses_first: bool,
    work: Option<F>,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> Job for Pending<R, F>
where
    R: Send,
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send,
{
    fn refuses_first(&self) -> bool {
        self.refuses_first
    }

    fn run(&mut self, conn: &Connection) -> Ran {
        let result = match self.work.take() {
            Some(work) => work(conn),
            None => Err(StoreError::unavailable("job ran twice")),
        };
        let ran = match &result {
            Ok(_) => Ran::Done,
            Err(e) if e.is_unavailable() => Ran::Broken(crate::problems::chain(e)),
            Err(_) => Ran::Refused,
        };
        self.result = Some(result);
        ran
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
    let busy_ms = BUSY_TIMEOUT.as_millis();
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA busy_timeout = {busy_ms};
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{cache_kib};"
    ))
    .map_err(unavailable)?;
    plan_stably(&conn)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Turns on the query planner's stability guarantee: a statement's plan never depends on
/// the values bound to it. Without it SQLite marks every `LIMIT ?n` (and each comparison a
/// partial index's condition might match) so that binding a new value prepares the
/// statement again, parsing and planning it at each execution: 3 % of a step's
/// instructions (`scripts/steps-callgrind.sh`). No query of the store relies on a bound
/// value to choose its index: partial indexes are matched by literals or `IS NOT NULL`.
pub fn plan_stably(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map(drop)
    .map_err(unavailable)
}

/// Maps a SQLite error to the store's vocabulary.
pub fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::unavailable_by("SQLite", e)
}

/// What the writer thread is asked to do.
enum Task {
    /// Work for the next group commit.
    Job(Box<dyn Job>),
    /// Fold the WAL into the database and truncate it (a clean stop), then answer.
    Truncate(oneshot::Sender<Result<(), StoreError>>),
}

/// How long a rewind waits for reads in progress before it gives up until later.
const REWIND_PATIENCE: Duration = Duration::from_millis(100);
/// After a rewind that reads (or the checkpoint thread) kept busy, the next try comes
/// this much later.
const RETRY_REWIND: Duration = Duration::from_millis(10);

/// The WAL's bound, watched by the writer.
#[derive(Debug, Clone)]
pub struct WalBound {
    /// Past this (three quarters of the bound, so that one more batch still fits), writes
    /// wait until the WAL is rewound.
    pub must_rewind_at: u64,
    /// The WAL is rewound once it holds this many bytes of frames.
    pub rewind_at: u64,
}

impl WalBound {
    /// A bound of `max_bytes`: the WAL is rewound when it passes half of that.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            must_rewind_at: (max_bytes / 4 * 3).max(1),
            rewind_at: (max_bytes / 2).max(1),
        }
    }

    /// Whether a WAL of `bytes` must be rewound now, and how hard to try: briefly past
    /// half the bound (and not before `next_try`), until it works past three quarters.
    fn rewind_now(&self, bytes: u64, next_try: Instant) -> Option<Rewind> {
        if bytes >= self.must_rewind_at {
            Some(Rewind::Must)
        } else if bytes >= self.rewind_at && Instant::now() >= next_try {
            Some(Rewind::Try)
        } else {
            None
        }
    }
}

/// The WAL's length as the writer's commits left it: SQLite's WAL hook reports its frames
/// after each commit.
struct WalLength {
    frames: Arc<AtomicU64>,
    /// Bytes of one frame: a page and its header.
    frame_bytes: u64,
}

/// The writer's counts behind [`WriteStats`], shared with the store that reports them.
#[derive(Debug, Default)]
pub struct WriteCounts {
    commits: AtomicU64,
    writes: AtomicU64,
    wal_pages: AtomicU64,
}

impl WriteCounts {
    pub fn get(&self) -> WriteStats {
        WriteStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            wal_pages: self.wal_pages.load(Ordering::Relaxed),
        }
    }

    /// The WAL holds `frames` after a commit that found it holding `before`: a WAL that
    /// holds fewer than before was written again from its start. (One that starts again
    /// and ends exactly as long as before is counted as not grown: rare, and a few pages.)
    fn grew(&self, before: u64, frames: u64) {
        let added = if frames >= before {
            frames - before
        } else {
            frames
        };
        self.wal_pages.fetch_add(added, Ordering::Relaxed);
    }
}

impl WalLength {
    fn watch(conn: &mut Connection, counts: Arc<WriteCounts>) -> Result<Self, StoreError> {
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(unavailable)?;
        let frames = Arc::new(AtomicU64::new(0));
        let seen = frames.clone();
        conn.wal_hook(Some(
            move |_: &mut rusqlite::hooks::Wal, n: std::ffi::c_int| {
                let n = u64::try_from(n).unwrap_or(0);
                counts.grew(seen.swap(n, Ordering::Relaxed), n);
                Ok(())
            },
        ))
        .map_err(unavailable)?;
        Ok(Self {
            frames,
            frame_bytes: page.unsigned_abs() + WAL_FRAME_HEADER,
        })
    }

    fn bytes(&self) -> u64 {
        WAL_HEADER + self.frames.load(Ordering::Relaxed) * self.frame_bytes
    }

    /// After a rewind: the next commit writes from the WAL's start.
    fn rewound(&self) {
        self.frames.store(0, Ordering::Relaxed);
    }
}

/// Bytes of the WAL file's header and of each frame's.
const WAL_HEADER: u64 = 32;
const WAL_FRAME_HEADER: u64 = 24;

/// How hard the writer tries to rewind the WAL.
#[derive(Debug, Clone, Copy)]
enum Rewind {
    /// Once, waiting up to [`REWIND_PATIENCE`] for reads in progress.
    Try,
    /// Until it works (or [`BUSY_TIMEOUT`] passes): no batch commits meanwhile.
    Must,
}

/// Rewinds the WAL as hard as `how` says.
fn rewind_wal(conn: &Connection, how: Rewind) -> Result<(), StoreError> {
    let Rewind::Must = how else {
        return checkpoint(conn, Checkpoint::Restart, REWIND_PATIENCE);
    };
    let give_up = Instant::now() + BUSY_TIMEOUT;
    loop {
        // The checkpoint thread's passive checkpoint makes this fail at once, without
        // waiting: try again until it is done.
        match checkpoint(conn, Checkpoint::Restart, REWIND_PATIENCE) {
            Err(_) if Instant::now() < give_up => std::thread::sleep(RETRY_REWIND / 10),
            other => return other,
        }
    }
}

/// Work the writer does on its own every `every`: the first job of the next batch once
/// that much time has passed (so never while the store is idle: the work must be able to
/// wait). A failure is logged and rolls back only the work.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    pub every: Duration,
    pub work: fn(&Connection) -> Result<(), StoreError>,
}

impl Upkeep {
    fn job(self) -> Box<dyn Job> {
        let (reply, _) = oneshot::channel();
        let work = move |conn: &Connection| {
            (self.work)(conn).inspect_err(|e| {
                tracing::warn!(error = %crate::problems::chain(e), "store upkeep failed");
            })
        };
        Box::new(Pending {
            refuses_first: false,
            work: Some(work),
            result: None,
            reply,
        })
    }
}

/// The write side: a queue feeding the writer thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::UnboundedSender<Task>,
    /// The outcome of the last batch.
    pub health: Arc<WriteHealth>,
    /// What the writer has committed so far.
    pub counts: Arc<WriteCounts>,
}

impl Writer {
    /// Starts the writer thread on `conn`, with its `upkeep`. It stops when every `Writer`
    /// clone is dropped.
    pub fn start(
        mut conn: Connection,
        bound: WalBound,
        upkeep: Option<Upkeep>,
    ) -> Result<Self, StoreError> {
        let counts = Arc::new(WriteCounts::default());
        let length = WalLength::watch(&mut conn, counts.clone())?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let health = Arc::new(WriteHealth::default());
        let (recorder, counter) = (health.clone(), counts.clone());
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let watch = Watch {
                    bound: &bound,
                    length: &length,
                    health: &recorder,
                    counts: &counter,
                };
                run(&mut conn, rx, &watch, upkeep)
            })
            .map_err(|e| StoreError::unavailable_by("cannot start the writer thread", e))?;
        Ok(Self {
            jobs,
            health,
            counts,
        })
    }

    /// Folds the WAL into the database and truncates it, after every write queued before.
    pub async fn truncate_wal(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Task::Truncate(reply))
            .map_err(|_| StoreError::unavailable("the writer has stopped"))?;
        rx.await
            .map_err(|_| StoreError::unavailable("the writer has stopped"))?
    }

    /// Runs `work` in the next group commit and returns its result once committed.
    pub async fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.send(false, work).await
    }

    /// Like [`Writer::write`], for work that refuses (returns an error other than
    /// [`StoreError::Unavailable`]) only before its first write: it runs without a
    /// savepoint of its own.
    pub async fn write_refusing_first<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.send(true, work).await
    }

    async fn send<R, F>(&self, refuses_first: bool, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Pending {
            refuses_first,
            work: Some(work),
            result: None,
            reply,
        });
        self.jobs
            .send(Task::Job(job))
            .map_err(|_| StoreError::unavailable("the writer has stopped"))?;
        rx.await
            .map_err(|_| StoreError::unavailable("the writer has stopped"))?
    }
}

/// What the writer keeps an eye on besides its jobs.
#[derive(Clone, Copy)]
struct Watch<'a> {
    bound: &'a WalBound,
    length: &'a WalLength,
    health: &'a WriteHealth,
    counts: &'a WriteCounts,
}

fn run(
    conn: &mut Connection,
    mut rx: mpsc::UnboundedReceiver<Task>,
    watch: &Watch<'_>,
    upkeep: Option<Upkeep>,
) {
    let Watch {
        bound,
        length,
        health,
        counts,
    } = *watch;
    let mut upkept = Instant::now();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut truncate = Vec::new();
    // After a rewind readers kept busy, the next try waits this long.
    let mut next_try = Instant::now();
    // Until then every job runs in its own savepoint (a write failed recently).
    let mut savepoints_until = Instant::now();
    while let Some(first) = rx.blocking_recv() {
        if let Some(upkeep) = upkeep
            && upkept.elapsed() >= upkeep.every
        {
            // First in its batch, so that no page it writes was changed by an earlier job
            // (its savepoint copies none).
            batch.push(upkeep.job());
            upkept = Instant::now();
        }
        let mut next = Some(first);
        while let Some(task) = next.take() {
            match task {
                Task::Job(job) => batch.push(job),
                Task::Truncate(reply) => truncate.push(reply),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        // A batch rolled back whole leaves the jobs it had not run yet for the next.
        while !batch.is_empty() {
            let bare = Instant::now() >= savepoints_until;
            if commit_batch(conn, &mut batch, bare, health, counts).is_err() {
                savepoints_until = Instant::now() + SAVEPOINTS_AFTER_FAILURE;
            }
        }
        if !truncate.is_empty() {
            let result = truncate_wal(conn);
            if result.is_ok() {
                length.rewound();
            }
            for reply in truncate.drain(..) {
                let _ = reply.send(result.clone());
            }
        } else if let Some(rewind) = bound.rewind_now(length.bytes(), next_try) {
            match rewind_wal(conn, rewind) {
                Ok(()) => length.rewound(),
                Err(e) => {
                    next_try = Instant::now() + RETRY_REWIND;
                    tracing::debug!(error = %crate::problems::chain(&e), "WAL rewind postponed");
                }
            }
        }
    }
}

/// How a checkpoint leaves the WAL once every frame is back in the database.
#[derive(Debug, Clone, Copy)]
enum Checkpoint {
    /// The next commit writes from the WAL's start, over the file's blocks.
    Restart,
    /// The file is cut to zero bytes (a clean stop).
    Truncate,
}

/// Folds the WAL into the database and truncates it, waiting as long as a rewind that
/// must succeed (every write queued before is committed: the writer runs this between
/// batches).
fn truncate_wal(conn: &Connection) -> Result<(), StoreError> {
    let give_up = Instant::now() + BUSY_TIMEOUT;
    loop {
        match checkpoint(conn, Checkpoint::Truncate, REWIND_PATIENCE) {
            Err(_) if Instant::now() < give_up => std::thread::sleep(RETRY_REWIND / 10),
            other => return other,
        }
    }
}

/// A `RESTART` or `TRUNCATE` checkpoint: every WAL frame back into the database and the
/// WAL rewound. Waits up to `patience` for readers still using the WAL.
fn checkpoint(conn: &Connection, how: Checkpoint, patience: Duration) -> Result<(), StoreError> {
    let sql = match how {
        Checkpoint::Restart => "PRAGMA wal_checkpoint(RESTART)",
        Checkpoint::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    conn.busy_timeout(patience).map_err(unavailable)?;
    let checkpoint = conn.query_row(sql, [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    let (busy, log, done) = checkpoint.map_err(unavailable)?;
    if busy != 0 {
        return Err(StoreError::unavailable(format!(
            "the WAL could not be rewound: readers kept it busy ({done} of {log} frames copied)"
        )));
    }
    tracing::debug!(frames = log, ?how, "WAL rewound");
    Ok(())
}

/// Runs a batch in one transaction, records its outcome in `health` and `counts`, then
/// answers its jobs; `Err` with the reason when the database refused a write (the batch's commit, or
/// a job's statements). Health comes first so that a caller told of a failure finds it in
/// readiness at once. Jobs left in `batch` (after a job without a savepoint failed and
/// rolled the batch back) were not run: they go into the next transaction. Jobs that
/// refuse only before their first write run without a savepoint when `bare` is true.
fn commit_batch(
    conn: &Connection,
    batch: &mut Vec<Box<dyn Job>>,
    bare: bool,
    health: &WriteHealth,
    counts: &WriteCounts,
) -> Result<(), String> {
    let (result, answers) = run_batch(conn, batch, bare);
    match &result {
        Ok(()) => health.committed(),
        Err(reason) => health.failed(reason.clone()),
    }
    let committed = answers.iter().filter(|(_, a)| a.is_ok()).count() as u64;
    if committed > 0 {
        counts.commits.fetch_add(1, Ordering::Relaxed);
        counts.writes.fetch_add(committed, Ordering::Relaxed);
    }
    for (job, answer) in answers {
        job.answer(answer);
    }
    result
}

/// The jobs of a batch with what each is to be answered.
type Answers = Vec<(Box<dyn Job>, Result<(), StoreError>)>;

/// [`commit_batch`] without the answers: they are returned.
fn run_batch(
    conn: &Connection,
    batch: &mut Vec<Box<dyn Job>>,
    bare: bool,
) -> (Result<(), String>, Answers) {
    if let Err(e) = execute_cached(conn, "BEGIN IMMEDIATE") {
        let err = unavailable(e);
        let reason = crate::problems::chain(&err);
        let answers = batch.drain(..).map(|job| (job, Err(err.clone()))).collect();
        return (Err(reason), answers);
    }
    let mut answers = Vec::with_capacity(batch.len());
    let mut done = Vec::with_capacity(batch.len());
    let mut broken = None;
    let mut jobs = std::mem::take(batch).into_iter();
    while let Some(mut job) = jobs.next() {
        if bare && job.refuses_first() {
            if let Ran::Broken(reason) = job.run(conn) {
                let _ = conn.execute_batch("ROLLBACK");
                let err = StoreError::unavailable(format!(
                    "rolled back with its batch, where a write failed: {reason}"
                ));
                answers.extend(
                    done.into_iter()
                        .chain([job])
                        .map(|job| (job, Err(err.clone()))),
                );
                batch.extend(jobs);
                return (Err(reason), answers);
            }
            done.push(job);
            continue;
        }
        if let Err(e) = execute_cached(conn, "SAVEPOINT job") {
            let err = unavailable(e);
            broken = Some(crate::problems::chain(&err));
            answers.push((job, Err(err)));
            continue;
        }
        let cleanup = match job.run(conn) {
            Ran::Done => execute_cached(conn, "RELEASE job"),
            ran => {
                if let Ran::Broken(reason) = ran {
                    broken = Some(reason);
                }
                execute_cached(conn, "ROLLBACK TO job")
                    .and_then(|()| execute_cached(conn, "RELEASE job"))
            }
        };
        match cleanup {
            Ok(()) => done.push(job),
            Err(e) => answers.push((job, Err(unavailable(e)))),
        }
    }
    let outcome = execute_cached(conn, "COMMIT").map_err(unavailable);
    if outcome.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let result = match (&outcome, broken) {
        (Err(e), _) => Err(crate::problems::chain(e)),
        (Ok(()), Some(reason)) => Err(reason),
        (Ok(()), None) => Ok(()),
    };
    answers.extend(done.into_iter().map(|job| (job, outcome.clone())));
    (result, answers)
}

/// Runs a statement without parameters from the connection's statement cache (savepoint
/// statements run twice per job, `BEGIN` and `COMMIT` once per batch; parsing them each
/// time showed up in profiles).
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
            let _ = reply.send(snapshot(conn, work));
        });
        self.reads
            .send(read)
            .map_err(|_| StoreError::unavailable("the store is closed"))?;
        answer
            .await
            .map_err(|_| StoreError::unavailable("a read failed without an answer"))?
    }
}

/// Runs `work` in one read transaction: every statement it makes sees the same snapshot,
/// so a run is never read with its row from one commit and its steps from the next.
fn snapshot<R>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    execute_cached(conn, "BEGIN").map_err(unavailable)?;
    let out = work(conn);
    execute_cached(conn, "COMMIT").map_err(unavailable)?;
    out
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
        if !conn.is_autocommit() {
            // A read that panicked inside its transaction: end it, or the next would fail.
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_cached_statement_runs_again_with_new_values_without_being_prepared_again() {
        use rusqlite::params;
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db"), false, 1024).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT);
             CREATE INDEX t_open ON t (id) WHERE s IN ('a', 'b');
             INSERT INTO t (s) VALUES ('a'), ('b'), ('c'), ('a');",
        )
        .unwrap();
        let sql = "SELECT id FROM t WHERE id > ?1 AND s = ?2 ORDER BY id LIMIT ?3";
        for (after, s, limit) in [(0, "a", 1), (0, "a", 5), (1, "b", 2), (0, "c", 0)] {
            let mut st = conn.prepare_cached(sql).unwrap();
            let ids: Vec<i64> = st
                .query_map(params![after, s, limit], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let want = [(1, "a"), (2, "b"), (3, "c"), (4, "a")]
                .into_iter()
                .filter(|&(id, v)| id > after && v == s)
                .map(|(id, _)| id)
                .take(limit as usize)
                .collect::<Vec<_>>();
            assert_eq!(ids, want);
            assert_eq!(st.get_status(rusqlite::StatementStatus::RePrepare), 0);
        }
    }

    #[test]
    fn wal_pages_count_what_each_commit_appended_also_after_the_wal_starts_again() {
        let counts = WriteCounts::default();
        counts.grew(0, 6);
        counts.grew(6, 10);
        // A commit that finds the WAL written back and starts it again from frame 0.
        counts.grew(10, 3);
        assert_eq!(counts.get().wal_pages, 6 + 4 + 3);
    }
    use super::*;

    type Reply = oneshot::Receiver<Result<(), StoreError>>;

    fn job(
        refuses_first: bool,
        work: impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    ) -> (Box<dyn Job>, Reply) {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Pending {
            refuses_first,
            work: Some(work),
            result: None,
            reply,
        });
        (job, rx)
    }

    fn insert(x: i64) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO t (x) VALUES (?1)", [x])
                .map(drop)
                .map_err(unavailable)
        }
    }

    fn fails_after_writing(c: &Connection) -> Result<(), StoreError> {
        insert(2)(c)?;
        Err(StoreError::unavailable("disk full"))
    }

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db"), false, 1024).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .unwrap();
        (dir, conn)
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        let mut st = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// [`commit_batch`] with health and counts no test looks at.
    fn commit_alone(
        conn: &Connection,
        batch: &mut Vec<Box<dyn Job>>,
        bare: bool,
    ) -> Result<(), String> {
        commit_batch(
            conn,
            batch,
            bare,
            &WriteHealth::default(),
            &WriteCounts::default(),
        )
    }

    fn answer(rx: &mut Reply) -> Result<(), StoreError> {
        rx.try_recv().expect("the job was answered")
    }

    #[test]
    fn a_job_without_savepoint_failing_after_its_first_write_rolls_back_its_batch_and_leaves_the_rest_for_the_next()
     {
        let (_dir, conn) = store();
        let (first, mut first_rx) = job(false, insert(1));
        let (failing, mut failing_rx) = job(true, fails_after_writing);
        let (last, mut last_rx) = job(true, insert(3));
        let mut batch = vec![first, failing, last];
        let reason = commit_alone(&conn, &mut batch, true).unwrap_err();
        assert!(reason.contains("disk full"), "{reason}");
        assert!(answer(&mut first_rx).unwrap_err().is_unavailable());
        assert!(answer(&mut failing_rx).unwrap_err().is_unavailable());
        assert!(rows(&conn).is_empty(), "nothing of the batch is committed");
        assert_eq!(
            batch.len(),
            1,
            "the job not yet run waits for the next batch"
        );
        assert!(last_rx.try_recv().is_err(), "and is not answered yet");
        commit_alone(&conn, &mut batch, true).unwrap();
        answer(&mut last_rx).unwrap();
        assert_eq!(rows(&conn), vec![3]);
    }

    fn upkeep_marks(c: &Connection) -> Result<(), StoreError> {
        c.execute(
            "INSERT INTO t (x) VALUES ((SELECT COALESCE(MAX(x), 99) + 1 FROM t WHERE x >= 100))",
            [],
        )
        .map(drop)
        .map_err(unavailable)
    }

    #[tokio::test]
    async fn upkeep_joins_a_batch_once_its_time_has_come_and_never_runs_while_idle() {
        let (dir, conn) = store();
        let upkeep = Upkeep {
            every: Duration::from_secs(1),
            work: upkeep_marks,
        };
        let writer = Writer::start(conn, WalBound::new(64 << 20), Some(upkeep)).unwrap();
        writer.write(insert(1)).await.unwrap();
        let reader = open(&dir.path().join("t.db"), false, 1024).unwrap();
        assert_eq!(rows(&reader), vec![1], "not due yet at the first batch");
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(rows(&reader), vec![1], "an idle writer does no upkeep");
        writer.write(insert(2)).await.unwrap();
        assert_eq!(rows(&reader), vec![1, 2, 100], "due: it joined the batch");
        writer.write(insert(3)).await.unwrap();
        assert_eq!(
            rows(&reader),
            vec![1, 2, 3, 100],
            "and waits its interval again"
        );
    }

    #[test]
    fn a_job_without_savepoint_that_refuses_leaves_its_batch_to_commit() {
        let (_dir, conn) = store();
        let (first, mut first_rx) = job(true, insert(1));
        let (refusing, mut refusing_rx) = job(true, |_| {
            Err(StoreError::Conflict("the guard did not hold".into()))
        });
        let (last, mut last_rx) = job(false, insert(3));
        let mut batch = vec![first, refusing, last];
        commit_alone(&conn, &mut batch, true).unwrap();
        answer(&mut first_rx).unwrap();
        assert!(matches!(
            answer(&mut refusing_rx),
            Err(StoreError::Conflict(_))
        ));
        answer(&mut last_rx).unwrap();
        assert_eq!(rows(&conn), vec![1, 3]);
    }

    /// A batch whose middle job writes and then fails, run with that job's savepoint:
    /// the failing job rolls back alone and the others commit.
    fn assert_the_failing_job_rolls_back_alone(refuses_first: bool, bare: bool) {
        let (_dir, conn) = store();
        let (first, mut first_rx) = job(true, insert(1));
        let (failing, mut failing_rx) = job(refuses_first, fails_after_writing);
        let (last, mut last_rx) = job(true, insert(3));
        let mut batch = vec![first, failing, last];
        assert!(commit_alone(&conn, &mut batch, bare).is_err());
        answer(&mut first_rx).unwrap();
        assert!(answer(&mut failing_rx).unwrap_err().is_unavailable());
        answer(&mut last_rx).unwrap();
        assert_eq!(rows(&conn), vec![1, 3]);
        assert!(batch.is_empty());
    }

    /// A job that notes, when it is answered, what the writer's health said then.
    struct Witness {
        health: Arc<WriteHealth>,
        seen: std::sync::mpsc::Sender<Option<String>>,
    }

    impl Job for Witness {
        fn refuses_first(&self) -> bool {
            false
        }

        fn run(&mut self, conn: &Connection) -> Ran {
            match fails_after_writing(conn) {
                Ok(()) => Ran::Done,
                Err(e) => Ran::Broken(crate::problems::chain(&e)),
            }
        }

        fn answer(self: Box<Self>, _: Result<(), StoreError>) {
            self.seen.send(self.health.failure()).unwrap();
        }
    }

    #[test]
    fn a_failed_write_is_in_the_health_before_its_caller_hears_of_it() {
        let (_dir, conn) = store();
        let health = Arc::new(WriteHealth::default());
        let (seen, heard) = std::sync::mpsc::channel();
        let witness = Box::new(Witness {
            health: health.clone(),
            seen,
        });
        let mut batch: Vec<Box<dyn Job>> = vec![witness];
        let counts = WriteCounts::default();
        assert!(commit_batch(&conn, &mut batch, true, &health, &counts).is_err());
        let failure = heard
            .try_recv()
            .unwrap()
            .expect("the failure was recorded first");
        assert!(failure.contains("disk full"), "{failure}");
    }

    #[test]
    fn a_job_with_savepoint_failing_after_its_first_write_rolls_back_alone() {
        assert_the_failing_job_rolls_back_alone(false, true);
    }

    #[test]
    fn after_a_failed_write_a_job_without_savepoint_gets_one_and_fails_alone() {
        assert_the_failing_job_rolls_back_alone(true, false);
    }
}
