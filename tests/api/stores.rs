//! One test body, both stores: [`on_both_stores!`] declares `sqlite::name` and
//! `postgres::name` for each test function `name(Store)`, which starts its server with
//! [`spawn_on`] (a fresh SQLite file, or a fresh database on the test cluster).

use orchestrator::config::RawConfig;

use crate::helpers::{TestApp, spawn_app_with};

/// The store a test's server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

/// Starts a server on `store`, with the test configuration changed by `adjust`.
pub async fn spawn_on(store: Store, adjust: impl FnOnce(&mut RawConfig)) -> TestApp {
    let dsn = match store {
        Store::Sqlite => None,
        Store::Postgres => Some(crate::pg::fresh_database().await),
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

/// Declares each `async fn name(store: Store)` once per store, as `sqlite::name` and
/// `postgres::name`.
macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::stores::Store::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::stores::Store::Postgres).await;
                }
            )+
        }
    };
}

pub(crate) use on_both_stores;
