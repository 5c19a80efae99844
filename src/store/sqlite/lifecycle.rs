//! The embedded store's [`Lifecycle`]: write health with a probe row, retention deletes
//! in small writer jobs, and hook delivery leases. One process owns the file (its lock),
//! so its identity needs no more than that.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, params};

use crate::model::{Timestamp, now};
use crate::store::lifecycle::check_writes;
use crate::store::{Lifecycle, StoreError, WriteStats};

use super::SqliteStore;
use super::pool::unavailable;
use super::rows::ms;

/// The tables holding a run's rows besides `runs` itself and its hook events, each keyed
/// by `run_id` (retention and deletion both clear them).
pub(super) const RUN_CHILDREN: [&str; 5] = [
    "step_runs",
    "tasks",
    "approvals",
    "run_logs",
    "idempotency_keys",
];

#[async_trait]
impl Lifecycle for SqliteStore {
    async fn writable(&self) -> Result<(), StoreError> {
        check_writes(&self.writer.health, self.probe()).await
    }

    async fn hold_identity(&self, _id: &str) -> Result<(), StoreError> {
        // The file lock taken at open already makes this process the only one.
        Ok(())
    }

    async fn expire_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE runs SET lease_expires_at = 0 \
                     WHERE owner = ?1 AND status IN ('PENDING', 'RUNNING')",
                )
                .and_then(|mut s| s.execute([&owner]))
                .map(|n| n as u64)
                .map_err(unavailable)
            })
            .await
    }

    async fn delete_finished_runs(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.writer
            .write(move |conn| delete_runs(conn, ms(before), limit))
            .await
    }

    async fn prune_events(
        &self,
        acked: u64,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.writer
            .write(move |conn| super::event_keys::prune(conn, acked, ms(before), limit))
            .await
    }

    async fn hold_hook_lease(
        &self,
        target: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (target, holder) = (target.to_owned(), holder.to_owned());
        self.writer
            .write(move |conn| {
                let at = ms(now());
                conn.prepare_cached(
                    "INSERT INTO hook_leases (target, holder, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (target) DO UPDATE SET holder = excluded.holder, \
                     expires_at = excluded.expires_at \
                     WHERE hook_leases.holder = excluded.holder OR hook_leases.expires_at < ?4",
                )
                .and_then(|mut s| {
                    s.execute(params![target, holder, at + ttl.as_millis() as i64, at])
                })
                .map(|n| n > 0)
                .map_err(unavailable)
            })
            .await
    }

    fn write_stats(&self) -> Option<WriteStats> {
        Some(self.writer.counts.get())
    }

    async fn release_hook_lease(&self, target: &str, holder: &str) -> Result<(), StoreError> {
        let (target, holder) = (target.to_owned(), holder.to_owned());
        self.writer
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM hook_leases WHERE target = ?1 AND holder = ?2")
                    .and_then(|mut s| s.execute([&target, &holder]))
                    .map(|_| ())
                    .map_err(unavailable)
            })
            .await
    }
}

impl SqliteStore {
    /// Rewrites the probe row: the smallest write that still needs the disk.
    async fn probe(&self) -> Result<(), StoreError> {
        self.writer
            .write(|conn| {
                conn.prepare_cached(
                    "INSERT INTO probes (id, at) VALUES (1, ?1) \
                     ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                )
                .and_then(|mut s| s.execute([ms(now())]))
                .map(|_| ())
                .map_err(unavailable)
            })
            .await
    }
}

/// The oldest finished runs, by the index on `finished_at`: left to itself, SQLite (no
/// statistics) picks `runs_by_status` for the `IN` and reads every finished run in the
/// store, on the writer thread, at each retention pass.
const EXPIRED_RUNS: &str = "SELECT id FROM runs r INDEXED BY runs_by_finish \
    WHERE finished_at < ?1 AND status IN ('SUCCEEDED', 'FAILED', 'CANCELED') \
    AND NOT EXISTS (SELECT 1 FROM runs p WHERE p.id = r.parent_run_id \
      AND p.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELED')) \
    ORDER BY finished_at LIMIT ?2";

/// Deletes up to `limit` finished runs older than `before` (milliseconds) and their rows;
/// a child run whose parent is still going stays until the parent has finished.
fn delete_runs(conn: &Connection, before: i64, limit: usize) -> Result<u64, StoreError> {
    let ids: Vec<String> = conn
        .prepare_cached(EXPIRED_RUNS)
        .and_then(|mut s| {
            s.query_map(params![before, limit as i64], |r| r.get(0))?
                .collect()
        })
        .map_err(unavailable)?;
    if ids.is_empty() {
        return Ok(0);
    }
    super::event_keys::forget_runs(conn, &ids)?;
    let list = vec!["?"; ids.len()].join(",");
    for table in RUN_CHILDREN {
        conn.execute(
            &format!("DELETE FROM {table} WHERE run_id IN ({list})"),
            rusqlite::params_from_iter(ids.iter()),
        )
        .map_err(unavailable)?;
    }
    conn.execute(
        &format!("DELETE FROM runs WHERE id IN ({list})"),
        rusqlite::params_from_iter(ids.iter()),
    )
    .map(|n| n as u64)
    .map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sql: &str) -> String {
        let conn = Connection::open_in_memory().unwrap();
        super::super::pool::plan_stably(&conn).unwrap();
        super::super::migrate(&conn).unwrap();
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let params = vec![0; st.parameter_count()];
        let rows = st
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .unwrap();
        rows.collect::<Result<Vec<_>, _>>().unwrap().join("; ")
    }

    #[test]
    fn retention_finds_expired_runs_by_their_finish_time() {
        let plan = plan(EXPIRED_RUNS);
        assert!(plan.contains("runs_by_finish"), "{plan}");
        assert!(!plan.contains("runs_by_status"), "{plan}");
    }
}
