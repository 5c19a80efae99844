//! The embedded store: one SQLite file (WAL) under `data/`, the default when
//! `database.dsn` is empty.
//!
//! One process owns the file: start-up takes an exclusive lock on `<file>.lock`, so leases
//! left by a previous process are cleared at open and its runs resume at once.
//! Writes go through the group-commit writer thread; reads use a small connection pool.

mod backup;
mod curation;
mod event_keys;
mod lifecycle;
mod pool;
mod queues;
mod rows;
mod runs;
mod tasks;
mod triggers;
mod workflows;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{
    LogEntry, NewLogEntry, Page, PageRequest, Run, RunFilter, RunStatus, TemplateRecord, Timestamp,
    WorkflowVersion, now,
};
use crate::store::{
    Archived, Committed, CreatedRun, Curation, Deletion, EventFilter, LogLimits, NewRun,
    NewWorkflowVersion, Schedule, ScheduleUpdate, Store, StoreError, StoredEvent, Transition,
    WebhookTrigger, WorkflowEntry, WorkflowFilter, WorkflowHead,
};

pub use backup::{BackupReport, backup};
pub use event_keys::index_all as index_event_keys;
use pool::{Checkpointer, Readers, Upkeep, WalBound, Writer, unavailable};
use rows::{load_run, log_row, ms};

/// How often the WAL is checkpointed (off the writer's path).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Schema migrations in order; `PRAGMA user_version` records how many are applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_flow.sql"),
    include_str!("migrations/0003_api.sql"),
    include_str!("migrations/0004_triggers.sql"),
    include_str!("migrations/0005_lifecycle.sql"),
    include_str!("migrations/0006_tasks.sql"),
    include_str!("migrations/0007_event_keys.sql"),
    include_str!("migrations/0008_event_type.sql"),
    include_str!("migrations/0009_event_postings.sql"),
];

/// How the embedded store is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `synchronous = FULL` (power-loss safe) instead of `NORMAL`.
    pub synchronous_full: bool,
    /// Read connections, each on its own thread.
    pub read_connections: usize,
    /// The WAL's bound on disk, in bytes (`database.wal_max_bytes`).
    pub wal_max_bytes: u64,
}

/// The default WAL bound: 64 MiB.
pub const DEFAULT_WAL_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: Writer,
    readers: Readers,
    _checkpointer: Checkpointer,
    path: PathBuf,
    _lock: File,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with the default WAL bound.
    pub fn open(
        path: &Path,
        synchronous_full: bool,
        read_connections: usize,
    ) -> Result<Self, StoreError> {
        Self::open_with(
            path,
            &SqliteOptions {
                synchronous_full,
                read_connections,
                wal_max_bytes: DEFAULT_WAL_MAX_BYTES,
            },
        )
    }

    /// Opens (creating if needed) the store at `path`, applies migrations, clears leases
    /// and folds a WAL left by a previous process into the database.
    pub fn open_with(path: &Path, options: &SqliteOptions) -> Result<Self, StoreError> {
        let SqliteOptions {
            synchronous_full,
            read_connections,
            wal_max_bytes,
        } = options.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::unavailable_by(
                    format!(
                        "database.path: cannot create the directory {}",
                        dir.display()
                    ),
                    e,
                )
            })?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = File::create(&lock_path).map_err(|e| {
            StoreError::unavailable_by(
                format!("database.path: cannot create {}", lock_path.display()),
                e,
            )
        })?;
        lock.try_lock().map_err(|_| {
            StoreError::unavailable(format!(
                "database.path: {} is in use by another orchestrator process",
                path.display()
            ))
        })?;
        let conn = pool::open(path, synchronous_full, pool::WRITER_CACHE_KIB)?;
        migrate(&conn)?;
        // One process owns the file (the lock above), so no lease can be live.
        conn.execute(
            "UPDATE runs SET owner = NULL, lease_expires_at = NULL WHERE owner IS NOT NULL",
            [],
        )
        .map_err(unavailable)?;
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {wal_max_bytes}; \
             PRAGMA wal_checkpoint(TRUNCATE);"
        ))
        .map_err(unavailable)?;
        let bound = WalBound::new(wal_max_bytes);
        Ok(Self {
            writer: Writer::start(
                conn,
                bound.clone(),
                Some(Upkeep {
                    every: event_keys::EVERY,
                    work: event_keys::index_new,
                }),
            )?,
            readers: Readers::open(path, read_connections)?,
            _checkpointer: Checkpointer::start(path, synchronous_full, CHECKPOINT_EVERY)?,
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let applied: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(unavailable)? as usize;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::unavailable(format!(
            "the database is at schema version {applied}, newer than this server ({})",
            MIGRATIONS.len()
        )));
    }
    // Main carried, for an evening (2026-12-01, `cfc3dce`..`cae9dca`), a withdrawn
    // migration 8 that moved step changes into a `run_journal` table. A store it wrote is
    // at version 8 without this version's 8, and its journal holds step changes no
    // reader here applies: refuse it rather than open it with those changes missing.
    let journal: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'run_journal')",
            [],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    if journal {
        return Err(StoreError::unavailable(
            "the database was written by a development build with a per-run journal \
             (schema version 8 of main between cfc3dce and cae9dca, since withdrawn); \
             finish its runs with that build, or start from a new database",
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            StoreError::unavailable_by(format!("migration {} failed", i + 1), e)
        })?;
    }
    Ok(())
}

fn collect<T>(
    rows: impl Iterator<Item = rusqlite::Result<Result<T, StoreError>>>,
) -> Result<Vec<T>, StoreError> {
    rows.map(|r| r.map_err(unavailable).and_then(|r| r))
        .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn close(&self) -> Result<(), StoreError> {
        self.writer.truncate_wal().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.readers
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(unavailable))
            .await
    }

    async fn create_workflow(
        &self,
        new: NewWorkflowVersion,
    ) -> Result<WorkflowVersion, StoreError> {
        self.writer
            .write(move |conn| workflows::create_workflow(conn, new))
            .await
    }

    async fn add_workflow_version(
        &self,
        new: NewWorkflowVersion,
    ) -> Result<WorkflowVersion, StoreError> {
        self.writer
            .write(move |conn| workflows::add_workflow_version(conn, new))
            .await
    }

    async fn get_workflow(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowVersion, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| workflows::get_workflow(conn, &id, version))
            .await
    }

    async fn list_workflows(
        &self,
        request: &PageRequest,
    ) -> Result<Page<WorkflowVersion>, StoreError> {
        let request = request.clone();
        self.readers
            .read(move |conn| workflows::list_workflows(conn, &request))
            .await
    }

    async fn list_workflow_versions(&self, id: &str) -> Result<Vec<WorkflowVersion>, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| workflows::list_workflow_versions(conn, &id))
            .await
    }

    async fn create_template(
        &self,
        template: TemplateRecord,
    ) -> Result<TemplateRecord, StoreError> {
        self.writer
            .write(move |conn| workflows::create_template(conn, template))
            .await
    }

    async fn get_template(&self, name: &str) -> Result<TemplateRecord, StoreError> {
        let name = name.to_owned();
        self.readers
            .read(move |conn| workflows::get_template(conn, &name))
            .await
    }

    async fn list_templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        self.readers.read(workflows::list_templates).await
    }

    async fn create_run(&self, new: NewRun) -> Result<CreatedRun, StoreError> {
        self.writer
            .write(move |conn| runs::create_run(conn, new))
            .await
    }

    async fn get_run(&self, id: &str) -> Result<Run, StoreError> {
        let id = id.to_owned();
        self.readers.read(move |conn| load_run(conn, &id)).await
    }

    async fn list_runs(
        &self,
        filter: &RunFilter,
        request: &PageRequest,
    ) -> Result<Page<Run>, StoreError> {
        let (filter, request) = (filter.clone(), request.clone());
        self.readers
            .read(move |conn| curation::list_runs(conn, &filter, &request))
            .await
    }

    async fn commit(&self, transition: Transition) -> Result<Committed, StoreError> {
        // Its guard is its first statement: a refused commit wrote nothing.
        self.writer
            .write_refusing_first(move |conn| runs::commit(conn, transition))
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
            .write(move |conn| runs::claim(conn, &owner, ttl, limit))
            .await
    }

    async fn renew_leases(&self, owner: &str, ttl: Duration) -> Result<Vec<String>, StoreError> {
        let owner = owner.to_owned();
        let until = ms(now()) + ttl.as_millis() as i64;
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE runs SET lease_expires_at = ?2 \
                     WHERE owner = ?1 AND status IN ('PENDING', 'RUNNING') RETURNING id",
                )
                .and_then(|mut s| s.query_map(params![owner, until], |r| r.get(0))?.collect())
                .map_err(unavailable)
            })
            .await
    }

    async fn due_approvals(&self, at: Timestamp, limit: usize) -> Result<Vec<String>, StoreError> {
        self.readers
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id FROM runs WHERE approval_deadline <= ?1 \
                         AND status IN ('WAITING_APPROVAL', 'WAITING') \
                         ORDER BY approval_deadline LIMIT ?2",
                    )
                    .map_err(unavailable)?;
                let ids = stmt
                    .query_map(params![ms(at), limit as i64], |r| r.get(0))
                    .map_err(unavailable)?
                    .collect::<Result<Vec<String>, _>>()
                    .map_err(unavailable)?;
                Ok(ids)
            })
            .await
    }

    async fn append_logs(
        &self,
        run_id: &str,
        entries: Vec<NewLogEntry>,
        limits: LogLimits,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let run_id = run_id.to_owned();
        self.writer
            .write(move |conn| runs::append_client_logs(conn, &run_id, entries, limits))
            .await
    }

    async fn read_logs(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let run_id = run_id.to_owned();
        self.readers
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT seq, ts, level, source, step, message, status FROM run_logs \
                         WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    )
                    .map_err(unavailable)?;
                let entries = collect(
                    stmt.query_map(params![run_id, after as i64, limit as i64], log_row)
                        .map_err(unavailable)?,
                )?;
                if entries.is_empty() {
                    let exists: Option<i64> = conn
                        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
                        .and_then(|mut s| s.query_row([&run_id], |r| r.get(0)).optional())
                        .map_err(unavailable)?;
                    if exists.is_none() {
                        return Err(StoreError::NotFound(format!("run {run_id}")));
                    }
                }
                Ok(entries)
            })
            .await
    }

    async fn read_events(
        &self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.list_events(&EventFilter::default(), after_id, limit)
            .await
    }

    async fn event_cursor(&self, target: &str) -> Result<u64, StoreError> {
        let target = target.to_owned();
        self.readers
            .read(move |conn| {
                let id: Option<i64> = conn
                    .prepare_cached("SELECT last_id FROM event_cursors WHERE target = ?1")
                    .and_then(|mut s| s.query_row([&target], |r| r.get(0)).optional())
                    .map_err(unavailable)?;
                Ok(id.unwrap_or(0) as u64)
            })
            .await
    }

    async fn set_event_cursor(&self, target: &str, id: u64) -> Result<(), StoreError> {
        let target = target.to_owned();
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO event_cursors (target, last_id) VALUES (?1, ?2) \
                     ON CONFLICT (target) DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
                )
                .and_then(|mut s| s.execute(params![target, id as i64]))
                .map_err(unavailable)?;
                Ok(())
            })
            .await
    }

    async fn purge_expired(&self, at: Timestamp) -> Result<u64, StoreError> {
        self.writer
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM idempotency_keys WHERE expires_at < ?1")
                    .and_then(|mut s| s.execute([ms(at)]))
                    .map(|n| n as u64)
                    .map_err(unavailable)
            })
            .await
    }

    async fn create_schedule(&self, schedule: Schedule) -> Result<Schedule, StoreError> {
        self.writer
            .write(move |conn| triggers::create_schedule(conn, schedule))
            .await
    }

    async fn get_schedule(&self, id: &str) -> Result<Schedule, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| triggers::get_schedule(conn, &id))
            .await
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.readers.read(triggers::list_schedules).await
    }

    async fn update_schedule(&self, update: ScheduleUpdate) -> Result<Schedule, StoreError> {
        self.writer
            .write(move |conn| triggers::update_schedule(conn, update))
            .await
    }

    async fn delete_schedule(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |conn| triggers::delete_schedule(conn, &id))
            .await
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        self.readers
            .read(move |conn| triggers::due_schedules(conn, now, limit))
            .await
    }

    async fn next_schedule_tick(&self) -> Result<Option<Timestamp>, StoreError> {
        self.readers.read(triggers::next_schedule_tick).await
    }

    async fn advance_schedule(
        &self,
        id: &str,
        expect: Timestamp,
        next: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |conn| triggers::advance_schedule(conn, &id, expect, next))
            .await
    }

    async fn create_webhook(&self, trigger: WebhookTrigger) -> Result<WebhookTrigger, StoreError> {
        self.writer
            .write(move |conn| triggers::create_webhook(conn, trigger))
            .await
    }

    async fn get_webhook(&self, name: &str) -> Result<WebhookTrigger, StoreError> {
        let name = name.to_owned();
        self.readers
            .read(move |conn| triggers::get_webhook(conn, &name))
            .await
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookTrigger>, StoreError> {
        self.readers.read(triggers::list_webhooks).await
    }

    async fn delete_webhook(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer
            .write(move |conn| triggers::delete_webhook(conn, &name))
            .await
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let filter = filter.clone();
        self.readers
            .read(move |conn| event_keys::list(conn, &filter, after_id, limit))
            .await
    }

    async fn count_runs(&self, status: RunStatus) -> Result<u64, StoreError> {
        self.readers
            .read(move |conn| {
                conn.prepare_cached("SELECT COUNT(*) FROM runs WHERE status = ?1")
                    .and_then(|mut s| s.query_row([status.as_str()], |r| r.get::<_, i64>(0)))
                    .map(|n| n.max(0) as u64)
                    .map_err(unavailable)
            })
            .await
    }

    async fn outbox_head(&self) -> Result<u64, StoreError> {
        self.readers
            .read(|conn| {
                conn.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM events")
                    .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                    .map(|n| n.max(0) as u64)
                    .map_err(unavailable)
            })
            .await
    }
}

#[async_trait]
impl Curation for SqliteStore {
    async fn search_workflows(
        &self,
        filter: &WorkflowFilter,
        request: &PageRequest,
    ) -> Result<Page<WorkflowEntry>, StoreError> {
        let (filter, request) = (filter.clone(), request.clone());
        self.readers
            .read(move |conn| curation::search_workflows(conn, &filter, &request))
            .await
    }

    async fn workflow_entry(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowEntry, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| curation::workflow_entry(conn, &id, version))
            .await
    }

    async fn workflow_head(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<WorkflowHead, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| curation::workflow_head(conn, &id, version))
            .await
    }

    async fn archive_workflow(&self, id: &str, by: &str) -> Result<Archived, StoreError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.writer
            .write(move |conn| curation::archive_workflow(conn, &id, &by))
            .await
    }

    async fn count_runs_by_status(
        &self,
        filter: &RunFilter,
    ) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        let filter = filter.clone();
        self.readers
            .read(move |conn| curation::count_runs_by_status(conn, &filter))
            .await
    }

    async fn delete_run(&self, id: &str, by: &str) -> Result<Deletion, StoreError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.writer
            .write(move |conn| curation::delete_run(conn, &id, &by))
            .await
    }

    async fn deleted_run(&self, id: &str) -> Result<Option<Deletion>, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| curation::deleted_run(conn, &id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_written_with_the_withdrawn_journal_is_refused_and_left_as_it_was() {
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..7] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE run_journal (run_id TEXT NOT NULL, log_end INTEGER NOT NULL, \
             rev INTEGER NOT NULL, steps TEXT, PRIMARY KEY (run_id, log_end, rev)) \
             STRICT, WITHOUT ROWID; PRAGMA user_version = 8;",
        )
        .unwrap();
        let refused = migrate(&conn).unwrap_err();
        assert!(refused.to_string().contains("per-run journal"), "{refused}");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 8);
        let typed: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('events') WHERE name = 'type'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(typed, 0);

        let fresh = Connection::open_in_memory().unwrap();
        migrate(&fresh).unwrap();
        migrate(&fresh).unwrap();
    }
}
