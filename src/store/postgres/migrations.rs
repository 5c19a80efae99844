//! Versioned schema migrations of the PostgreSQL store.
//!
//! `schema_migrations` records each applied version. Migrations run on one connection
//! holding a session advisory lock, so replicas starting together apply each migration
//! exactly once: the second waits for the lock and then finds nothing left to do. Each
//! migration commits with its version row, so a failure leaves the previous version.

use tokio_postgres::NoTls;

use crate::store::StoreError;

/// Schema migrations in order; version `n` is `MIGRATIONS[n - 1]`.
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

/// The advisory lock key that serialises migrations ("orchmigr").
const MIGRATION_LOCK: i64 = 0x6f72_6368_6d69_6772;

/// Applies every migration the database lacks.
pub async fn run(config: &tokio_postgres::Config) -> Result<(), StoreError> {
    let (mut client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| {
            StoreError::unavailable_by(
                "cannot connect to PostgreSQL (check database.dsn, and that PostgreSQL runs and accepts connections from this host)",
                e,
            )
        })?;
    let driver = tokio::spawn(connection);
    let result = apply(&mut client).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn apply(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    let failed = |what: &str, e: tokio_postgres::Error| StoreError::Unavailable {
        what: what.to_owned(),
        cause: Some(std::sync::Arc::new(super::db_error(e))),
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| failed("cannot take the migration lock", e))?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    BIGINT PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|e| failed("cannot create schema_migrations", e))?;
    let applied: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| failed("cannot read schema_migrations", e))?;
    let applied = applied as usize;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::unavailable(format!(
            "the database is at schema version {applied}, newer than this server ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = (i + 1) as i64;
        let tx = client
            .transaction()
            .await
            .map_err(|e| failed("cannot begin a migration", e))?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| failed(&format!("migration {version} failed"), e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(|e| failed(&format!("migration {version} failed"), e))?;
        tx.commit()
            .await
            .map_err(|e| failed(&format!("migration {version} failed"), e))?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| failed("cannot release the migration lock", e))?;
    Ok(())
}
