//! Group commit for PostgreSQL: writer tasks batch the writes of concurrent callers.
//!
//! A writer takes every job queued at the moment it becomes free (up to [`MAX_BATCH`]),
//! runs each inside its own savepoint of one transaction on one pooled connection, and
//! commits once; only then are callers answered, so nobody hears "done" for data that is
//! not committed. A failing job rolls back to its savepoint alone. A job that lost a
//! deadlock against another replica's batch is re-run in the next batch. The notices
//! of a batch go to the announcer only after its commit, so other replicas never hear
//! of a change before it is visible. (Not with `pg_notify` inside the transaction: a
//! notifying commit holds a database-wide lock, which would serialise every writer's
//! commit and its WAL flush.)
//!
//! A job that can only refuse before its first write (a guarded commit of a run: one
//! statement whose guard decides whether anything is written) runs without a savepoint:
//! a savepoint costs a round trip and a subtransaction per job. Such jobs that follow each
//! other in a batch are sent together, their statements pipelined on the connection (with
//! the batch's `BEGIN` when they come first), so that a batch costs a few round trips
//! rather than one or two per job. A refusal leaves nothing to undo; a database error
//! aborts the whole transaction, so the batch is rolled back and the jobs that ran in it
//! run again in the next batch (a job's work may run more than once; only one run is
//! committed). When such a group ends the batch, its `COMMIT` is sent behind it, once
//! every job of the group has put its last write on the wire (see [`Sent`]): a batch of
//! commits then costs one exchange with the database. A database error among them aborts
//! the transaction, so that `COMMIT` ends it as a rollback, known from the error. After
//! such a failure every job gets its savepoint again for
//! [`SAVEPOINTS_AFTER_FAILURE`] (renewed by each further failure), so a job that fails each
//! time it is tried fails alone on its retries instead of taking its batch with it.
//!
//! A few writers share the queue, each on its own connection: while one waits for its
//! round trips and its commit's fsync, the next collects a batch. Every batch holds the
//! outbox lock in shared mode, which never makes writers wait for each other; readers of
//! the outbox use it to find how far they may read (see [`super::horizon`]). Jobs of one run are
//! ordered by their callers (the engine awaits each commit), and concurrent jobs on one
//! run serialise on its row lock; a deadlock between two batches re-runs the loser.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures::future::join3;
use futures::task::AtomicWaker;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::error::SqlState;

use super::horizon::OUTBOX_LOCK;
use super::notify::Outgoing;
use crate::store::{StoreError, WriteHealth};

/// Most jobs sharing one commit.
const MAX_BATCH: usize = 256;
/// Times a job that lost a deadlock is tried again before its caller hears of it.
const MAX_RETRIES: u32 = 3;
/// How long every job runs in its own savepoint after a job's write failed.
const SAVEPOINTS_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// The pooled connection a batch runs on.
pub type Conn = Arc<deadpool_postgres::Object>;

/// Why a job failed: a store verdict, or a database error the writer classifies.
#[derive(Debug)]
pub enum Fault {
    Store(StoreError),
    Db(tokio_postgres::Error),
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<tokio_postgres::Error> for Fault {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

impl Fault {
    /// True for a deadlock or serialization failure: running the job again may succeed.
    fn retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.code().is_some_and(|c| {
            *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                || *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
        }))
    }

    /// Why the database refused the job's writes (not a rule of the store's), if it did.
    fn refusal(&self) -> Option<String> {
        match self {
            Self::Store(e) if e.is_unavailable() => Some(crate::problems::chain(e)),
            Self::Store(_) => None,
            Self::Db(e) => {
                let rule = e.code().is_some_and(|c| {
                    *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::INVALID_TEXT_REPRESENTATION
                });
                (!rule).then(|| match e.as_db_error() {
                    Some(db) => db.to_string(),
                    None => crate::problems::chain(e),
                })
            }
        }
    }

    /// True when the statement was refused only because an earlier one of the same
    /// transaction had failed (pipelined jobs after a failing one).
    fn aborted_by_another(&self) -> bool {
        matches!(self, Self::Db(e) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION))
    }

    /// True when the database answered with an error inside the transaction, which
    /// aborts it (not a lost connection, after which nobody knows how it ended).
    fn aborted_the_transaction(&self) -> bool {
        matches!(self, Self::Db(e) if e.code().is_some())
    }

    /// True for a rule's refusal (a guard, a missing row), made before the job wrote
    /// anything and without a database error: the transaction goes on unharmed.
    fn refused_cleanly(&self) -> bool {
        matches!(
            self,
            Self::Store(StoreError::Conflict(_) | StoreError::NotFound(_))
        )
    }

    /// The store's view of the failure.
    pub fn into_store(self) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Db(e) => super::db_error(e),
        }
    }
}

/// What a job produced, and the notices to send when it commits.
pub struct Done<R> {
    pub value: R,
    pub notices: Vec<Outgoing>,
}

impl<R> Done<R> {
    /// A result that announces nothing.
    pub fn quiet(value: R) -> Self {
        Self {
            value,
            notices: Vec::new(),
        }
    }
}

/// A job's word that its last write of the transaction is on the wire, so that the
/// batch's `COMMIT` may follow it: the job marks it as soon as that is so (at the latest
/// the writer marks it when the job ends). A job must send nothing inside the transaction
/// after marking it; it may still read (a refusal's reason), after the `COMMIT`.
pub struct Sent {
    group: Option<Arc<Sends>>,
    marked: AtomicBool,
}

impl Sent {
    /// A mark nobody waits for: the job runs alone, and the writer commits after it ends.
    fn unheeded() -> Self {
        Self {
            group: None,
            marked: AtomicBool::new(false),
        }
    }

    fn of(group: &Arc<Sends>) -> Self {
        Self {
            group: Some(group.clone()),
            marked: AtomicBool::new(false),
        }
    }

    /// The job's last write is on the wire (a second mark changes nothing).
    pub fn mark(&self) {
        if let Some(group) = &self.group
            && !self.marked.swap(true, Ordering::AcqRel)
            && group.left.fetch_sub(1, Ordering::AcqRel) == 1
        {
            group.all_sent.wake();
        }
    }
}

/// The marks of a group of jobs whose batch ends behind them.
struct Sends {
    left: AtomicUsize,
    /// A job failed in a way that rolls its batch back.
    doomed: AtomicBool,
    all_sent: AtomicWaker,
}

/// How a batch whose end followed its last jobs on the wire was ended.
enum Ending {
    Commit,
    Rollback,
}

/// Drives `request` to its end, marking `sent` once it has been polled: tokio-postgres
/// puts a request on the wire when its future is first polled, and executes requests in
/// the order they were first polled.
pub async fn sending<F: Future>(request: F, sent: &Sent) -> F::Output {
    let mut request = std::pin::pin!(request);
    let first = futures::poll!(request.as_mut());
    sent.mark();
    match first {
        Poll::Ready(out) => out,
        Poll::Pending => request.await,
    }
}

/// Ends the batch once every job of `group` has marked its writes sent: `COMMIT`, or
/// `ROLLBACK` when one of them failed before then in a way that dooms the batch.
async fn end_when_sent(conn: &Conn, group: &Sends) -> Result<Ending, tokio_postgres::Error> {
    futures::future::poll_fn(|cx| {
        group.all_sent.register(cx.waker());
        match group.left.load(Ordering::Acquire) {
            0 => Poll::Ready(()),
            _ => Poll::Pending,
        }
    })
    .await;
    if group.doomed.load(Ordering::Acquire) {
        conn.batch_execute("ROLLBACK").await?;
        Ok(Ending::Rollback)
    } else {
        conn.batch_execute("COMMIT").await?;
        Ok(Ending::Commit)
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A unit of work for the writer: run inside a savepoint unless it refuses only before its
/// first write (again after a deadlock), answered after the commit.
trait Job: Send {
    /// True when the job refuses (with a [`Fault::refused_cleanly`]) only before its first
    /// write, so it needs no savepoint.
    fn refuses_first(&self) -> bool;
    /// Runs the work, keeping its result; the fault when it failed. The work marks `sent`
    /// when its last write is on the wire.
    fn run(&mut self, conn: Conn, sent: Arc<Sent>) -> BoxFuture<'_, Option<Fault>>;
    /// The notices of the successful run.
    fn notices(&mut self) -> Vec<Outgoing>;
    /// Answers the caller with the work's result, or with `commit`'s error.
    fn answer(self: Box<Self>, commit: Result<(), StoreError>);
    /// How often the job ran into a deadlock so far.
    fn tries(&mut self) -> &mut u32;
}

struct Pending<R, F> {
    refuses_first: bool,
    work: F,
    result: Option<Done<R>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
    tries: u32,
}

impl<R, F, Fut> Job for Pending<R, F>
where
    R: Send + 'static,
    F: Fn(Conn, Arc<Sent>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Done<R>, Fault>> + Send + 'static,
{
    fn refuses_first(&self) -> bool {
        self.refuses_first
    }

    fn run(&mut self, conn: Conn, sent: Arc<Sent>) -> BoxFuture<'_, Option<Fault>> {
        Box::pin(async move {
            match (self.work)(conn, sent).await {
                Ok(done) => {
                    self.result = Some(done);
                    None
                }
                Err(fault) => Some(fault),
            }
        })
    }

    fn notices(&mut self) -> Vec<Outgoing> {
        self.result
            .as_mut()
            .map(|d| std::mem::take(&mut d.notices))
            .unwrap_or_default()
    }

    fn answer(self: Box<Self>, commit: Result<(), StoreError>) {
        let result = match (commit, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(done)) => Ok(done.value),
            (Ok(()), None) => Err(StoreError::unavailable("job did not run")),
        };
        let _ = self.reply.send(result);
    }

    fn tries(&mut self) -> &mut u32 {
        &mut self.tries
    }
}

/// The write side: a queue feeding the writer task.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::UnboundedSender<Box<dyn Job>>,
    /// The outcome of the last batch.
    pub health: Arc<WriteHealth>,
}

impl Writer {
    /// Starts `writers` writer tasks on `pool`. They stop when every `Writer` clone is
    /// dropped.
    pub fn start(
        pool: Pool,
        announce: mpsc::UnboundedSender<Vec<Outgoing>>,
        writers: usize,
    ) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        let health = Arc::new(WriteHealth::default());
        for _ in 0..writers.max(1) {
            tokio::spawn(run(
                pool.clone(),
                announce.clone(),
                rx.clone(),
                health.clone(),
            ));
        }
        Self { jobs, health }
    }

    /// Runs `work` in the next group commit and returns its result once committed.
    /// `work` may run more than once (after a deadlock); only one run is ever committed.
    pub async fn write<R, F, Fut>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Done<R>, Fault>> + Send + 'static,
    {
        self.send(false, move |conn, _| work(conn)).await
    }

    /// Like [`Writer::write`], for work that refuses (with a [`StoreError::Conflict`] or
    /// [`StoreError::NotFound`]) only before its first write: it runs without a savepoint
    /// of its own. It marks its [`Sent`] once its last write is on the wire, so that the
    /// batch's `COMMIT` can follow it without waiting for its answer.
    pub async fn write_refusing_first<R, F, Fut>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(Conn, Arc<Sent>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Done<R>, Fault>> + Send + 'static,
    {
        self.send(true, work).await
    }

    async fn send<R, F, Fut>(&self, refuses_first: bool, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(Conn, Arc<Sent>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Done<R>, Fault>> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Pending {
            refuses_first,
            work,
            result: None,
            reply,
            tries: 0,
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::unavailable("the writer has stopped"))?;
        rx.await
            .map_err(|_| StoreError::unavailable("the writer has stopped"))?
    }
}

type Queue = Arc<Mutex<mpsc::UnboundedReceiver<Box<dyn Job>>>>;

async fn run(
    pool: Pool,
    announce: mpsc::UnboundedSender<Vec<Outgoing>>,
    queue: Queue,
    health: Arc<WriteHealth>,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut again: Vec<Box<dyn Job>> = Vec::new();
    // Until then every job runs in its own savepoint (a write failed recently).
    let mut savepoints_until = Instant::now();
    loop {
        {
            // Collect a batch holding the queue; commit it after letting go.
            let mut rx = queue.lock().await;
            if again.is_empty() {
                match rx.recv().await {
                    Some(job) => batch.push(job),
                    None => return,
                }
            } else {
                batch.append(&mut again);
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        let bare = Instant::now() >= savepoints_until;
        if commit_batch(&pool, &announce, &mut batch, &mut again, &health, bare).await {
            savepoints_until = Instant::now() + SAVEPOINTS_AFTER_FAILURE;
        }
    }
}

/// Runs a batch in one transaction, records its outcome in `health`, then answers its
/// jobs (health first, so that a caller told of a failure finds it in readiness at once).
/// Jobs that refuse only before their first write run without a savepoint when `bare`;
/// true when a job's write failed (rolling back its batch, or itself in its savepoint).
async fn commit_batch(
    pool: &Pool,
    announce: &mpsc::UnboundedSender<Vec<Outgoing>>,
    batch: &mut Vec<Box<dyn Job>>,
    again: &mut Vec<Box<dyn Job>>,
    health: &WriteHealth,
    bare: bool,
) -> bool {
    let mut answers = Vec::with_capacity(batch.len());
    let mut write_failed = false;
    let outcome = run_batch(
        pool,
        announce,
        batch,
        again,
        &mut answers,
        bare,
        &mut write_failed,
    );
    match outcome.await {
        Ok(()) => health.committed(),
        Err(reason) => health.failed(reason),
    }
    for (job, answer) in answers {
        job.answer(answer);
    }
    write_failed
}

/// What became of jobs sent together: those that ran (or were cut off by another's failure,
/// to run again), and those whose own failure aborted the transaction (their tries counted).
/// Clean refusals are answered at once.
struct Pipelined {
    ran: Vec<Box<dyn Job>>,
    culprits: Vec<(Box<dyn Job>, Fault)>,
    cut_off: bool,
}

/// Runs `group` (jobs without savepoints) at once on `conn`; with `sends` when the batch's
/// end is to follow their writes on the wire.
async fn run_pipelined(
    conn: &Conn,
    mut group: Vec<Box<dyn Job>>,
    answers: &mut Answers,
    sends: Option<&Arc<Sends>>,
) -> Pipelined {
    let faults = futures::future::join_all(group.iter_mut().map(|job| {
        let sent = Arc::new(sends.map_or_else(Sent::unheeded, Sent::of));
        let run = job.run(conn.clone(), sent.clone());
        async move {
            let fault = run.await;
            if let (Some(group), Some(fault)) = (&sent.group, &fault)
                && !fault.refused_cleanly()
            {
                group.doomed.store(true, Ordering::Release);
            }
            sent.mark();
            fault
        }
    }))
    .await;
    let mut sent = Pipelined {
        ran: Vec::new(),
        culprits: Vec::new(),
        cut_off: false,
    };
    for (mut job, fault) in group.into_iter().zip(faults) {
        match fault {
            None => sent.ran.push(job),
            Some(fault) if fault.refused_cleanly() => answers.push((job, Err(fault.into_store()))),
            Some(fault) if fault.aborted_by_another() => {
                sent.cut_off = true;
                sent.ran.push(job);
            }
            Some(fault) => {
                *job.tries() += 1;
                sent.culprits.push((job, fault));
            }
        }
    }
    sent
}

/// The jobs of a batch with what each is to be answered.
type Answers = Vec<(Box<dyn Job>, Result<(), StoreError>)>;

/// [`commit_batch`] without the answers: they go into `answers`. `Err` with the reason
/// when the database refused a write (no connection, the commit, or a job's statements).
async fn run_batch(
    pool: &Pool,
    announce: &mpsc::UnboundedSender<Vec<Outgoing>>,
    batch: &mut Vec<Box<dyn Job>>,
    again: &mut Vec<Box<dyn Job>>,
    answers: &mut Answers,
    bare: bool,
    write_failed: &mut bool,
) -> Result<(), String> {
    let conn = match pool.get().await {
        Ok(conn) => Arc::new(conn),
        Err(e) => {
            let err = StoreError::unavailable_by("no database connection", e);
            answers.extend(batch.drain(..).map(|job| (job, Err(err.clone()))));
            return Err(crate::problems::chain(&err));
        }
    };
    // Shared outbox lock first, before any event id is taken (see `horizon`). Sent with
    // the batch's first jobs when they are pipelined (a round trip fewer): if it fails,
    // so do their statements, in the aborted transaction or on the broken connection.
    let begin_sql = format!("BEGIN; SELECT pg_advisory_xact_lock_shared({OUTBOX_LOCK})");
    let mut begin = Some(conn.batch_execute(&begin_sql));
    let mut done: Vec<Box<dyn Job>> = Vec::with_capacity(batch.len());
    let mut notices = Vec::new();
    let mut broken: Option<StoreError> = None;
    let mut refused: Option<String> = None;
    // How the batch ended, when its end was sent behind its last jobs.
    let mut ended: Option<Result<(), StoreError>> = None;
    // Whether the savepoint `job` is open: opened before a job that needs one, released
    // after it succeeds, kept (rolled back to) after it fails.
    let mut savepoint = false;
    let mut jobs = std::mem::take(batch).into_iter().peekable();
    while let Some(mut job) = jobs.next() {
        if let Some(err) = &broken {
            answers.push((job, Err(err.clone())));
            continue;
        }
        if bare && job.refuses_first() {
            // Jobs without savepoints that follow each other are sent together: their
            // statements are pipelined on the connection instead of a round trip each, and
            // the batch's end behind them when they end it.
            let mut group = vec![job];
            while let Some(next) = jobs.next_if(|j| j.refuses_first()) {
                group.push(next);
            }
            let sends = jobs.peek().is_none().then(|| {
                Arc::new(Sends {
                    left: AtomicUsize::new(group.len()),
                    doomed: AtomicBool::new(false),
                    all_sent: AtomicWaker::new(),
                })
            });
            let begin = begin.take();
            let (began, sent, end) = join3(
                async move {
                    match begin {
                        Some(begin) => begin.await,
                        None => Ok(()),
                    }
                },
                run_pipelined(&conn, group, answers, sends.as_ref()),
                async {
                    match &sends {
                        Some(group) => Some(end_when_sent(&conn, group).await),
                        None => None,
                    }
                },
            )
            .await;
            if let Err(e) = began {
                // Nothing was written: the statements sent after a failed BEGIN (or lock)
                // fail with it.
                let err = super::db_error(e);
                let _ = conn.batch_execute("ROLLBACK").await;
                let culprits = sent.culprits.into_iter().map(|(job, _)| job);
                let unrun = sent.ran.into_iter().chain(culprits).chain(jobs);
                answers.extend(unrun.map(|job| (job, Err(err.clone()))));
                return Err(crate::problems::chain(&err));
            }
            let failed = !sent.culprits.is_empty() || sent.cut_off;
            let rolled_back = match &end {
                // The end was sent behind the jobs: a database error among them aborted
                // the transaction (its `COMMIT` then rolls back); a failure of a job after
                // its writes were sent, outside the database, does not.
                Some(end) => {
                    matches!(end, Ok(Ending::Rollback))
                        || sent.cut_off
                        || sent
                            .culprits
                            .iter()
                            .any(|(_, f)| f.aborted_the_transaction())
                }
                None => failed,
            };
            if !rolled_back {
                for mut job in sent.ran {
                    notices.append(&mut job.notices());
                    done.push(job);
                }
                for (job, fault) in sent.culprits {
                    *write_failed = true;
                    refused = refused.or(fault.refusal());
                    answers.push((job, Err(fault.into_store())));
                }
                match end {
                    Some(end) => {
                        ended = Some(end.map(|_| ()).map_err(super::db_error));
                        break;
                    }
                    None => continue,
                }
            }
            // A failure aborted the transaction: nothing of the batch commits. The jobs
            // that ran or were cut off, and those not run yet, go into the next batch.
            if end.is_none() {
                let _ = conn.batch_execute("ROLLBACK").await;
            }
            *write_failed = true;
            again.append(&mut done);
            again.extend(sent.ran);
            again.extend(jobs);
            let mut reason = None;
            for (mut job, fault) in sent.culprits {
                if fault.retryable() && *job.tries() <= MAX_RETRIES {
                    again.push(job);
                } else {
                    reason = reason.or(fault.refusal().filter(|_| !fault.retryable()));
                    answers.push((job, Err(fault.into_store())));
                }
            }
            return reason.map_or(Ok(()), Err);
        }
        if let Some(begin) = begin.take()
            && let Err(e) = begin.await
        {
            let err = super::db_error(e);
            let _ = conn.batch_execute("ROLLBACK").await;
            answers.push((job, Err(err.clone())));
            answers.extend(jobs.map(|job| (job, Err(err.clone()))));
            return Err(crate::problems::chain(&err));
        }
        if !savepoint {
            if let Err(e) = conn.batch_execute("SAVEPOINT job").await {
                let err = super::db_error(e);
                answers.push((job, Err(err.clone())));
                broken = Some(err);
                continue;
            }
            savepoint = true;
        }
        match job.run(conn.clone(), Arc::new(Sent::unheeded())).await {
            None => match conn.batch_execute("RELEASE SAVEPOINT job").await {
                Ok(()) => {
                    savepoint = false;
                    notices.append(&mut job.notices());
                    done.push(job);
                }
                Err(e) => {
                    let err = super::db_error(e);
                    answers.push((job, Err(err.clone())));
                    broken = Some(err);
                }
            },
            Some(fault) => {
                if let Some(reason) = fault.refusal().filter(|_| !fault.retryable()) {
                    refused = Some(reason);
                }
                *write_failed |= !fault.refused_cleanly();
                if let Err(e) = conn.batch_execute("ROLLBACK TO SAVEPOINT job").await {
                    broken = Some(super::db_error(e));
                }
                let tries = job.tries();
                *tries += 1;
                if fault.retryable() && *tries <= MAX_RETRIES && broken.is_none() {
                    again.push(job);
                } else {
                    answers.push((job, Err(fault.into_store())));
                }
            }
        }
    }
    let outcome = match (broken, ended) {
        (Some(err), _) => Err(err),
        (None, Some(ended)) => ended,
        (None, None) => conn.batch_execute("COMMIT").await.map_err(super::db_error),
    };
    match outcome {
        Ok(()) if !notices.is_empty() => {
            let _ = announce.send(notices);
        }
        Ok(()) => {}
        Err(_) => {
            let _ = conn.batch_execute("ROLLBACK").await;
        }
    }
    let result = match (&outcome, refused) {
        (Err(e), _) => Err(crate::problems::chain(e)),
        (Ok(()), Some(reason)) => Err(reason),
        (Ok(()), None) => Ok(()),
    };
    answers.extend(done.into_iter().map(|job| (job, outcome.clone())));
    result
}
