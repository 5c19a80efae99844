//! One test body against both stores: the embedded SQLite store and a fresh PostgreSQL
//! database (on the cluster `scripts/test.sh` starts).

use orchestrator::config::RawConfig;

use crate::helpers::{TestApp, spawn_app_with};

/// The store a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Starts a server on `backend`, its configuration changed by `adjust`.
pub async fn spawn_on(backend: Backend, adjust: impl FnOnce(&mut RawConfig)) -> TestApp {
    let dsn = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(crate::pg::fresh_database().await),
    };
    spawn_app_with(move |raw| {
        if let Some(dsn) = dsn {
            raw.database.dsn = dsn;
            raw.database.pool_size = 4;
        }
        adjust(raw);
    })
    .await
}

/// Declares `sqlite::name` and `postgres::name` for each `async fn name(Backend)`.
macro_rules! both_stores {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::both::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::both::Backend::Postgres).await;
                }
            )+
        }
    };
}

pub(crate) use both_stores;
