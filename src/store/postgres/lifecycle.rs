//! The PostgreSQL store's [`Lifecycle`]: write health with a probe row, the server
//! identity lock, retention deletes (one statement per batch, rows locked with
//! `SKIP LOCKED` so that replicas pruning together share the work) and hook delivery
//! leases.

use std::time::Duration;

use async_trait::async_trait;

use crate::model::{Timestamp, now};
use crate::store::lifecycle::check_writes;
use crate::store::{Lifecycle, StoreError};

use super::notify::Outgoing;
use super::rows::{get, ms};
use super::writer::{Done, Fault};
use super::{PostgresStore, db_error, identity};

#[async_trait]
impl Lifecycle for PostgresStore {
    async fn writable(&self) -> Result<(), StoreError> {
        let probe = self.writer.write(|c| async move {
            c.execute(
                "INSERT INTO probes (id, at) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                &[&ms(now())],
            )
            .await?;
            Ok::<_, Fault>(Done::quiet(()))
        });
        check_writes(&self.writer.health, probe).await
    }

    async fn hold_identity(&self, id: &str) -> Result<(), StoreError> {
        let held = identity::hold(self.config.clone(), id).await?;
        if let Ok(mut slot) = self.identity.lock() {
            *slot = Some(held);
        }
        Ok(())
    }

    async fn expire_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.writer
            .write(move |c| {
                let owner = owner.clone();
                async move {
                    let rows = c
                        .query(
                            "UPDATE runs SET lease_expires_at = 0 \
                             WHERE owner = $1 AND status IN ('PENDING', 'RUNNING') RETURNING id",
                            &[&owner],
                        )
                        .await?;
                    let notices = rows
                        .iter()
                        .map(|r| {
                            Ok(Outgoing {
                                run_id: get(r, 0)?,
                                rev: None,
                                logs: None,
                                claimable: true,
                                queues: Vec::new(),
                            })
                        })
                        .collect::<Result<Vec<_>, StoreError>>()?;
                    Ok::<_, Fault>(Done {
                        value: notices.len() as u64,
                        notices,
                    })
                }
            })
            .await
    }

    async fn delete_finished_runs(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "WITH doomed AS ( \
               SELECT id FROM runs r WHERE finished_at < $1 \
               AND status IN ('SUCCEEDED', 'FAILED', 'CANCELED') \
               AND NOT EXISTS (SELECT 1 FROM runs p WHERE p.id = r.parent_run_id \
                 AND p.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELED')) \
               ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
             s AS (DELETE FROM step_runs WHERE run_id IN (SELECT id FROM doomed)), \
             t AS (DELETE FROM tasks WHERE run_id IN (SELECT id FROM doomed)), \
             a AS (DELETE FROM approvals WHERE run_id IN (SELECT id FROM doomed)), \
             l AS (DELETE FROM run_logs WHERE run_id IN (SELECT id FROM doomed)), \
             k AS (DELETE FROM idempotency_keys WHERE run_id IN (SELECT id FROM doomed)), \
             e AS (DELETE FROM events WHERE run_id IN (SELECT id FROM doomed)) \
             DELETE FROM runs WHERE id IN (SELECT id FROM doomed)",
            &[&ms(before), &(limit as i64)],
        )
        .await
        .map_err(db_error)
    }

    async fn prune_events(
        &self,
        acked: u64,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            // Only the oldest `$3`: events are appended in time order, so the old ones are
            // a prefix, and a pass never reads the whole outbox.
            "DELETE FROM events WHERE id IN (SELECT id FROM events \
             WHERE id <= $1 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) AND created_at < $2",
            &[&(acked as i64), &ms(before), &(limit as i64)],
        )
        .await
        .map_err(db_error)
    }

    async fn hold_hook_lease(
        &self,
        target: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let at = ms(now());
        let conn = self.conn().await?;
        let changed = conn
            .execute(
                "INSERT INTO hook_leases (target, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (target) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
                 WHERE hook_leases.holder = excluded.holder OR hook_leases.expires_at < $4",
                &[&target, &holder, &(at + ttl.as_millis() as i64), &at],
            )
            .await
            .map_err(db_error)?;
        Ok(changed > 0)
    }

    async fn release_hook_lease(&self, target: &str, holder: &str) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "DELETE FROM hook_leases WHERE target = $1 AND holder = $2",
            &[&target, &holder],
        )
        .await
        .map_err(db_error)?;
        Ok(())
    }
}
