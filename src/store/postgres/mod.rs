//! The PostgreSQL store, selected by `database.dsn: postgres://…`; several server
//! replicas may share one database.
//!
//! Writes go through the group-commit [`writer`]: concurrent callers share transactions,
//! each job in its own savepoint, answered after the commit. Reads use the connection
//! pool directly. Runs are owned through leases (claims use `FOR UPDATE SKIP LOCKED`),
//! and every commit announces what it changed with `pg_notify` (right after it), which the [`notify`]
//! listener turns into [`Notice`]s for this process. Migrations are applied at open
//! under a session advisory lock, so replicas starting together do not race.

mod commit;
mod curation;
mod horizon;
mod identity;
mod lifecycle;
mod migrations;
mod notify;
mod queries;
mod queues;
mod rows;
mod runs;
mod tasks;
mod triggers;
mod writer;

pub use horizon::OUTBOX_LOCK;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::broadcast;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::model::{
    LogEntry, NewLogEntry, Page, PageRequest, Run, RunFilter, RunStatus, TemplateRecord, Timestamp,
    WorkflowVersion, now,
};
use crate::store::{
    Archived, Committed, CreatedRun, Curation, Deletion, EventFilter, LogLimits, NewRun,
    NewWorkflowVersion, Notice, Schedule, ScheduleUpdate, Store, StoreError, StoredEvent,
    Transition, WebhookTrigger, WorkflowEntry, WorkflowFilter, WorkflowHead,
};

use rows::{ms, to_json};
use writer::{Done, Fault, Writer};

/// How long start-up, readiness and callers wait for a connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long PostgreSQL lets one of our transactions sit idle before it ends the session.
/// Ours never wait between statements, so only a process that stopped mid-transaction
/// (frozen, paused, cut off) trips it; its locks, among them the outbox's ordering lock
/// that every writer takes, are then released for the other replicas.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);

/// Passes a lease renewal makes over runs it skipped because a commit held them.
const RENEW_PASSES: u32 = 5;
/// Pause between those passes.
const RENEW_RETRY: Duration = Duration::from_millis(20);
/// Notices buffered for slow receivers before they lag (and re-check the store).
const NOTICE_CAPACITY: usize = 4096;

/// Connection settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub dsn: String,
    /// Connections in the pool (a quarter, at most 4, for group-commit writers; the rest
    /// for reads).
    pub pool_size: usize,
    /// Longest a single statement may run before the server cancels it.
    pub statement_timeout: Duration,
}

/// The PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    pool: Pool,
    writer: Writer,
    notices: Arc<broadcast::Sender<Notice>>,
    /// How to connect (the identity lock keeps a connection of its own).
    config: tokio_postgres::Config,
    /// The lock of this process's `server.id`, once held.
    identity: std::sync::Mutex<Option<identity::Held>>,
    /// How far the outbox may be read without skipping a later commit.
    horizon: horizon::Horizon,
}

/// Maps a database error to the store's vocabulary.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(e.to_string()),
        Some(c) if *c == SqlState::INVALID_TEXT_REPRESENTATION => {
            StoreError::Invalid(e.to_string())
        }
        _ => match e.as_db_error() {
            Some(db) => StoreError::unavailable_by("PostgreSQL", db.clone()),
            None => StoreError::unavailable_by("PostgreSQL", e),
        },
    }
}

impl PostgresStore {
    /// Connects, applies pending migrations, and starts the writer and notice listener.
    /// Must be called within a Tokio runtime.
    pub async fn open(options: &PgOptions) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = options
            .dsn
            .parse()
            .map_err(|e| StoreError::Invalid(format!("database.dsn: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("orchestrator");
        config.options(format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            options.statement_timeout.as_millis(),
            IDLE_IN_TRANSACTION.as_millis()
        ));
        migrations::run(&config).await?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::unavailable_by("cannot build the pool", e))?;
        let origin = crate::ids::new("store");
        let notices = Arc::new(broadcast::channel(NOTICE_CAPACITY).0);
        tokio::spawn(notify::listen(
            config.clone(),
            origin.clone(),
            Arc::downgrade(&notices),
        ));
        // A quarter of the pool writes (at most 4 batches in flight); the rest serves reads.
        let writers = (options.pool_size / 4).clamp(1, 4);
        let (announce, announced) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(notify::announce(pool.clone(), origin, announced));
        Ok(Self {
            writer: Writer::start(pool.clone(), announce, writers),
            pool,
            notices,
            config,
            identity: std::sync::Mutex::default(),
            horizon: horizon::Horizon::default(),
        })
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::unavailable_by("no database connection", e))
    }
}

/// Reads `f(tx)` in one read-only `REPEATABLE READ` transaction on a pooled connection:
/// one snapshot for every query, so a run is never read with its row from one commit and
/// its steps from the next.
macro_rules! snapshot {
    ($store:expr, |$c:ident| $body:expr) => {{
        let mut conn = $store.conn().await?;
        let $c = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db_error)?;
        let out = {
            let $c = &$c;
            $body
        }?;
        $c.commit().await.map_err(db_error)?;
        Ok(out)
    }};
}

/// Reads `f(conn)` on a pooled connection.
macro_rules! read {
    ($store:expr, |$c:ident| $body:expr) => {{
        let $c = $store.conn().await?;
        let $c = &$c;
        $body
    }};
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        read!(self, |c| c
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(db_error))
    }

    async fn create_workflow(
        &self,
        new: NewWorkflowVersion,
    ) -> Result<WorkflowVersion, StoreError> {
        self.writer
            .write(move |c| {
                let new = new.clone();
                async move { queries::create_workflow(&*c, &new).await.map(Done::quiet) }
            })
            .await
    }

    async fn add_workflow_version(
        &self,
        new: NewWorkflowVersion,
    ) -> Result<WorkflowVersion, StoreError> {
        self.writer
            .write(move |c| {
                let new = new.clone();
                async move {
                    queries::add_workflow_version(&*c, &new)
                        .await
                        .map(Done::quiet)
                }
            })
            .await
    }

    async fn get_workflow(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowVersion, StoreError> {
        read!(self, |c| queries::get_workflow(c, id, version).await)
    }

    async fn list_workflows(
        &self,
        request: &PageRequest,
    ) -> Result<Page<WorkflowVersion>, StoreError> {
        read!(self, |c| queries::list_workflows(c, request).await)
    }

    async fn list_workflow_versions(&self, id: &str) -> Result<Vec<WorkflowVersion>, StoreError> {
        read!(self, |c| queries::list_workflow_versions(c, id).await)
    }

    async fn create_template(
        &self,
        template: TemplateRecord,
    ) -> Result<TemplateRecord, StoreError> {
        self.writer
            .write(move |c| {
                let template = template.clone();
                async move {
                    let inserted = c
                        .execute(
                            "INSERT INTO templates (name, body, created_at, created_by) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                            &[
                                &template.name,
                                &to_json(&template.body),
                                &ms(template.created_at),
                                &template.created_by,
                            ],
                        )
                        .await?;
                    if inserted == 0 {
                        return Err(StoreError::Conflict(format!(
                            "template {} already exists",
                            template.name
                        ))
                        .into());
                    }
                    Ok(Done::quiet(template))
                }
            })
            .await
    }

    async fn get_template(&self, name: &str) -> Result<TemplateRecord, StoreError> {
        read!(self, |c| queries::get_template(c, name).await)
    }

    async fn list_templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        read!(self, |c| queries::list_templates(c).await)
    }

    async fn create_run(&self, new: NewRun) -> Result<CreatedRun, StoreError> {
        self.writer
            .write(move |c| {
                let new = new.clone();
                async move { runs::create_run(&*c, new).await }
            })
            .await
    }

    async fn get_run(&self, id: &str) -> Result<Run, StoreError> {
        snapshot!(self, |c| rows::load_run(c, id).await)
    }

    async fn list_runs(
        &self,
        filter: &RunFilter,
        request: &PageRequest,
    ) -> Result<Page<Run>, StoreError> {
        snapshot!(self, |c| curation::list_runs(c, filter, request).await)
    }

    async fn commit(&self, transition: Transition) -> Result<Committed, StoreError> {
        // Its guard is its first statement: it refuses before writing anything.
        let transition = Arc::new(transition);
        self.writer
            .write_refusing_first(move |c, sent| {
                let tx = transition.clone();
                async move { commit::commit(&*c, &tx, &sent).await }
            })
            .await
    }

    async fn claim_runs(
        &self,
        owner: &str,
        ttl: Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let owner = owner.to_owned();
        let ttl = ttl.as_millis() as i64;
        self.writer
            .write(move |c| {
                let owner = owner.clone();
                async move { runs::claim(&*c, &owner, ttl, limit).await }
            })
            .await
    }

    async fn renew_leases(&self, owner: &str, ttl: Duration) -> Result<Vec<String>, StoreError> {
        // Not a group-commit job: one statement at a time that skips rows a commit in
        // flight has locked, so a renewal neither waits for a batch nor holds rows a batch
        // waits for, and the two cannot deadlock (inside a batch, a renewal locking every
        // run of this owner in scan order did, under load). A skipped run is being
        // committed, and commits by its owner renew its lease; it is tried again anyway,
        // and left out of the answer when it stays locked.
        let until = ms(now()) + ttl.as_millis() as i64;
        let conn = self.conn().await?;
        let mut renewed = Vec::new();
        for pass in 1..=RENEW_PASSES {
            let row = conn
                .query_one(
                    "WITH renewed AS ( \
                       UPDATE runs SET lease_expires_at = $2 WHERE id IN ( \
                         SELECT id FROM runs WHERE owner = $1 \
                         AND status IN ('PENDING', 'RUNNING') AND lease_expires_at < $2 \
                         FOR UPDATE SKIP LOCKED) \
                       RETURNING id) \
                     SELECT COALESCE((SELECT array_agg(id) FROM renewed), ARRAY[]::text[]), \
                            (SELECT count(*) FROM runs WHERE owner = $1 \
                               AND status IN ('PENDING', 'RUNNING') AND lease_expires_at < $2) \
                          - (SELECT count(*) FROM renewed)",
                    &[&owner, &until],
                )
                .await
                .map_err(db_error)?;
            renewed.extend(rows::get::<Vec<String>>(&row, 0)?);
            let skipped: i64 = rows::get(&row, 1)?;
            if skipped <= 0 || pass == RENEW_PASSES {
                break;
            }
            tokio::time::sleep(RENEW_RETRY).await;
        }
        Ok(renewed)
    }

    async fn due_approvals(&self, at: Timestamp, limit: usize) -> Result<Vec<String>, StoreError> {
        read!(self, |c| {
            let rows = c
                .query(
                    "SELECT id FROM runs WHERE approval_deadline <= $1 \
                     AND status IN ('WAITING_APPROVAL', 'WAITING') \
                     ORDER BY approval_deadline LIMIT $2",
                    &[&ms(at), &(limit as i64)],
                )
                .await
                .map_err(db_error)?;
            rows.iter().map(|r| rows::get(r, 0)).collect()
        })
    }

    async fn append_logs(
        &self,
        run_id: &str,
        entries: Vec<NewLogEntry>,
        limits: LogLimits,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let run_id = run_id.to_owned();
        self.writer
            .write(move |c| {
                let (run_id, entries) = (run_id.clone(), entries.clone());
                async move { runs::append_client_logs(&*c, &run_id, entries, limits).await }
            })
            .await
    }

    async fn read_logs(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        read!(self, |c| queries::read_logs(c, run_id, after, limit).await)
    }

    async fn read_events(
        &self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        read!(self, |c| {
            let upto = self.horizon.advance(c).await?;
            queries::read_events(c, after_id, upto, limit).await
        })
    }

    async fn event_cursor(&self, target: &str) -> Result<u64, StoreError> {
        read!(self, |c| {
            let row = c
                .query_opt(
                    "SELECT last_id FROM event_cursors WHERE target = $1",
                    &[&target],
                )
                .await
                .map_err(db_error)?;
            let id = row.map(|r| rows::get::<i64>(&r, 0)).transpose()?;
            Ok(id.unwrap_or(0) as u64)
        })
    }

    async fn set_event_cursor(&self, target: &str, id: u64) -> Result<(), StoreError> {
        let target = target.to_owned();
        self.writer
            .write(move |c| {
                let target = target.clone();
                async move {
                    c.execute(
                        "INSERT INTO event_cursors (target, last_id) VALUES ($1, $2) \
                         ON CONFLICT (target) DO UPDATE \
                         SET last_id = GREATEST(event_cursors.last_id, excluded.last_id)",
                        &[&target, &(id as i64)],
                    )
                    .await?;
                    Ok(Done::quiet(()))
                }
            })
            .await
    }

    async fn purge_expired(&self, at: Timestamp) -> Result<u64, StoreError> {
        self.writer
            .write(move |c| async move {
                let n = c
                    .execute(
                        "DELETE FROM idempotency_keys WHERE expires_at < $1",
                        &[&ms(at)],
                    )
                    .await?;
                Ok::<_, Fault>(Done::quiet(n))
            })
            .await
    }

    async fn create_schedule(&self, schedule: Schedule) -> Result<Schedule, StoreError> {
        self.writer
            .write(move |c| {
                let schedule = schedule.clone();
                async move {
                    triggers::create_schedule(&*c, &schedule)
                        .await
                        .map(Done::quiet)
                }
            })
            .await
    }

    async fn get_schedule(&self, id: &str) -> Result<Schedule, StoreError> {
        read!(self, |c| triggers::get_schedule(c, id).await)
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        read!(self, |c| triggers::list_schedules(c).await)
    }

    async fn update_schedule(&self, update: ScheduleUpdate) -> Result<Schedule, StoreError> {
        self.writer
            .write(move |c| {
                let update = update.clone();
                async move {
                    triggers::update_schedule(&*c, &update)
                        .await
                        .map(Done::quiet)
                }
            })
            .await
    }

    async fn delete_schedule(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |c| {
                let id = id.clone();
                async move { triggers::delete_schedule(&*c, &id).await.map(Done::quiet) }
            })
            .await
    }

    async fn due_schedules(
        &self,
        at: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        read!(self, |c| triggers::due_schedules(c, at, limit).await)
    }

    async fn next_schedule_tick(&self) -> Result<Option<Timestamp>, StoreError> {
        read!(self, |c| triggers::next_schedule_tick(c).await)
    }

    async fn advance_schedule(
        &self,
        id: &str,
        expect: Timestamp,
        next: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |c| {
                let id = id.clone();
                async move {
                    triggers::advance_schedule(&*c, &id, expect, next)
                        .await
                        .map(Done::quiet)
                }
            })
            .await
    }

    async fn create_webhook(&self, trigger: WebhookTrigger) -> Result<WebhookTrigger, StoreError> {
        self.writer
            .write(move |c| {
                let trigger = trigger.clone();
                async move {
                    triggers::create_webhook(&*c, &trigger)
                        .await
                        .map(Done::quiet)
                }
            })
            .await
    }

    async fn get_webhook(&self, name: &str) -> Result<WebhookTrigger, StoreError> {
        read!(self, |c| triggers::get_webhook(c, name).await)
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookTrigger>, StoreError> {
        read!(self, |c| triggers::list_webhooks(c).await)
    }

    async fn delete_webhook(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer
            .write(move |c| {
                let name = name.clone();
                async move { triggers::delete_webhook(&*c, &name).await.map(Done::quiet) }
            })
            .await
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        read!(self, |c| {
            let upto = self.horizon.advance(c).await?;
            triggers::list_events(c, filter, after_id, upto, limit).await
        })
    }

    async fn count_runs(&self, status: RunStatus) -> Result<u64, StoreError> {
        read!(self, |c| {
            let row = c
                .query_one(
                    "SELECT COUNT(*) FROM runs WHERE status = $1",
                    &[&status.as_str()],
                )
                .await
                .map_err(db_error)?;
            Ok(rows::get::<i64>(&row, 0)?.max(0) as u64)
        })
    }

    async fn outbox_head(&self) -> Result<u64, StoreError> {
        read!(self, |c| self.horizon.advance(c).await)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Dropping the identity's connection releases its lock for a successor at once.
        if let Ok(mut held) = self.identity.lock() {
            held.take();
        }
        Ok(())
    }

    fn notices(&self) -> Option<broadcast::Receiver<Notice>> {
        Some(self.notices.subscribe())
    }
}

#[async_trait]
impl Curation for PostgresStore {
    async fn search_workflows(
        &self,
        filter: &WorkflowFilter,
        request: &PageRequest,
    ) -> Result<Page<WorkflowEntry>, StoreError> {
        read!(self, |c| curation::search_workflows(c, filter, request)
            .await)
    }

    async fn workflow_entry(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowEntry, StoreError> {
        read!(self, |c| curation::workflow_entry(c, id, version).await)
    }

    async fn workflow_head(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowHead, StoreError> {
        read!(self, |c| curation::workflow_head(c, id, version).await)
    }

    async fn archive_workflow(&self, id: &str, by: &str) -> Result<Archived, StoreError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.writer
            .write(move |c| {
                let (id, by) = (id.clone(), by.clone());
                async move {
                    curation::archive_workflow(&*c, &id, &by)
                        .await
                        .map(Done::quiet)
                }
            })
            .await
    }

    async fn count_runs_by_status(
        &self,
        filter: &RunFilter,
    ) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        read!(self, |c| curation::count_runs_by_status(c, filter).await)
    }

    async fn delete_run(&self, id: &str, by: &str) -> Result<Deletion, StoreError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.writer
            .write(move |c| {
                let (id, by) = (id.clone(), by.clone());
                async move { curation::delete_run(&*c, &id, &by).await.map(Done::quiet) }
            })
            .await
    }

    async fn deleted_run(&self, id: &str) -> Result<Option<Deletion>, StoreError> {
        read!(self, |c| curation::deleted_run(c, id).await)
    }
}
