//! One test body, both stores: [`on_both_stores!`] declares `sqlite::name` and
//! `postgres::name` for each test function `name(Store)`, which starts its server with
//! [`spawn_on`] (a fresh SQLite file, or a fresh database on the test cluster).

use std::collections::BTreeMap;

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
    let server_dsn = dsn.clone();
    let app = spawn_app_with(move |raw| {
        if let Some(dsn) = server_dsn {
            raw.database.dsn = dsn;
            raw.database.pool_size = 4;
        }
        adjust(raw);
    })
    .await;
    DSNS.lock().unwrap().insert(app.address.clone(), dsn);
    app
}

/// The PostgreSQL database of each server [`spawn_on`] started, by address.
static DSNS: std::sync::Mutex<BTreeMap<String, Option<String>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// How many rows of `table` have `run_id = run`, read straight from the store's database
/// (for tests that check what a deletion left behind).
pub async fn rows_of_run(app: &TestApp, table: &str, run: &str) -> i64 {
    let dsn = DSNS.lock().unwrap().get(&app.address).cloned().flatten();
    let sql = format!("SELECT count(*) FROM {table} WHERE run_id = $1");
    match dsn {
        Some(dsn) => {
            let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            let n: i64 = client.query_one(&sql, &[&run]).await.unwrap().get(0);
            drop(client);
            let _ = driver.await;
            n
        }
        None => {
            let conn = rusqlite::Connection::open(app.dir.path().join("orchestrator.db")).unwrap();
            conn.query_row(&sql.replace("$1", "?1"), [run], |r| r.get(0))
                .unwrap()
        }
    }
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
