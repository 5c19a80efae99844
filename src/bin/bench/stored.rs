//! Stored runs: W10 on a store holding few runs against the same store holding many
//! finished ones (issue 19: performance must stay flat as data grows). Driving a million
//! runs through the engine takes hours here, so the finished runs the first measurement
//! left are copied straight into the database file while the server is stopped: each copy
//! is what the engine wrote for a real run (run row, steps with outputs and attempts, log,
//! outbox events and their filter keys, context index), under a new id.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rusqlite::Connection;

use crate::clients::{self, Wait, Window};
use crate::scenarios::{self, Client, Rate};
use crate::server::Server;
use crate::target::Target;

/// What seeding did.
pub struct Seeded {
    /// Finished runs in the store afterwards.
    pub runs: u64,
    pub seconds: f64,
}

/// Runs copied per transaction.
const CHUNK: u64 = 20_000;

/// Copies the finished runs already in the embedded store at `db` (stopped) until it holds
/// `total` finished runs. Copies get ids that sort before every id the engine makes
/// (`run_00…`, a ULID of 1970), as older runs would, and are written in id order.
pub fn seed(db: &Path, total: u64) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let conn = Connection::open(db).context("opening the store to seed it")?;
    // A throwaway copy: no rollback journal to speak of, no fsync; WAL again at the end.
    conn.execute_batch(
        "PRAGMA journal_mode = DELETE; PRAGMA synchronous = OFF;
         PRAGMA cache_size = -524288; PRAGMA temp_store = MEMORY;
         CREATE TEMP TABLE tmpl (n INTEGER PRIMARY KEY, id TEXT NOT NULL);
         INSERT INTO tmpl (id) SELECT id FROM runs
             WHERE status = 'SUCCEEDED' AND parent_run_id IS NULL ORDER BY id;
         CREATE TEMP TABLE copies (c INTEGER PRIMARY KEY);",
    )?;
    let templates = conn
        .query_row("SELECT count(*) FROM tmpl", [], |r| r.get::<_, i64>(0))?
        .unsigned_abs();
    let finished = || -> rusqlite::Result<u64> {
        conn.query_row(
            "SELECT count(*) FROM runs WHERE status = 'SUCCEEDED'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(i64::unsigned_abs)
    };
    let have = finished()?;
    if templates == 0 {
        bail!("the store holds no finished run to copy");
    }
    let needed = total.saturating_sub(have);
    // Copy `c` of template `n` (from 1) is number `c * templates + n - 1`.
    let new_id = format!("printf('run_00%024d', copies.c * {templates} + tmpl.n - 1)");
    let from = |table: &str, key: &str| {
        format!(
            "FROM copies JOIN tmpl JOIN {table} AS x ON x.{key} = tmpl.id
             WHERE copies.c * {templates} + tmpl.n - 1 < {needed}"
        )
    };
    let statements = [
        copy(&conn, "runs", "id", &new_id, &from("runs", "id"), "")?,
        copy(
            &conn,
            "step_runs",
            "run_id",
            &new_id,
            &from("step_runs", "run_id"),
            ", x.idx",
        )?,
        copy(
            &conn,
            "run_logs",
            "run_id",
            &new_id,
            &from("run_logs", "run_id"),
            ", x.seq",
        )?,
        copy(
            &conn,
            "events",
            "run_id",
            &new_id,
            &from("events", "run_id"),
            ", x.id",
        )?,
    ];
    let per_chunk = (CHUNK / templates).max(1);
    let copies = needed.div_ceil(templates);
    let mut next = 0;
    while next < copies {
        let end = (next + per_chunk).min(copies);
        let tx = conn.unchecked_transaction()?;
        tx.execute("DELETE FROM copies", [])?;
        for c in next..end {
            tx.execute("INSERT INTO copies (c) VALUES (?1)", [i64::try_from(c)?])?;
        }
        for sql in &statements {
            tx.execute(sql, [])
                .with_context(|| format!("seeding: {sql}"))?;
        }
        // The events' filter keys, as the server's upkeep would have written them.
        orchestrator::store::sqlite::index_event_keys(&tx).context("seeding: event keys")?;
        tx.commit()?;
        next = end;
        eprintln!(
            "  seeded {} of {needed} runs ({:.0} s)",
            (next * templates).min(needed),
            started.elapsed().as_secs_f64()
        );
    }
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    Ok(Seeded {
        runs: finished()?,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `INSERT … SELECT` copying `table`'s rows of the template runs with `key` set to the
/// copy's id (and, for events, the id inside the body too); a rowid key of the table's
/// own (`events.id`) is left to SQLite.
fn copy(
    conn: &Connection,
    table: &str,
    key: &str,
    new_id: &str,
    from: &str,
    order: &str,
) -> anyhow::Result<String> {
    let mut columns = Vec::new();
    let mut values = Vec::new();
    let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let mut rows = st.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(1)?;
        let primary: i64 = row.get(5)?;
        let value = match name.as_str() {
            n if n == key => new_id.to_owned(),
            "id" if table == "events" && primary > 0 => continue,
            "body" if table == "events" => format!("replace(x.body, tmpl.id, {new_id})"),
            n => format!("x.{n}"),
        };
        columns.push(name);
        values.push(value);
    }
    Ok(format!(
        "INSERT INTO {table} ({}) SELECT {} {from} ORDER BY copies.c, tmpl.n{order}",
        columns.join(", "),
        values.join(", ")
    ))
}

/// Reads the first copy through the API, as a user would: a finished W10 run with its ten
/// steps and its log.
pub async fn check_a_copy(client: &Client) -> anyhow::Result<()> {
    let id = format!("run_00{:024}", 0);
    let run = client.get(&format!("/v1/runs/{id}")).await?;
    let steps = run["steps"].as_array().map_or(0, Vec::len);
    if run["status"] != "SUCCEEDED" || steps != 10 {
        bail!("the copy {id} does not read as a finished W10 run: {run}");
    }
    let log = client.get(&format!("/v1/runs/{id}/logs")).await?;
    if log.to_string().len() < 100 {
        bail!("the copy {id} has no log: {log}");
    }
    Ok(())
}

/// One store's windows: W10 at `IN_FLIGHT` runs, alternately with clients that only start
/// runs (the target tells when a run ended) and with clients that poll their runs.
#[derive(Default)]
pub struct Measured {
    pub throughput: Vec<Rate>,
    pub polling: Vec<Window>,
}

/// Runs in flight in both measurements.
pub const IN_FLIGHT: usize = 50;

/// A second of W10 on `server`, not measured.
pub async fn warm_up(server: &Server, target: &Arc<Target>, workflow: &str) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    scenarios::throughput(server, &client, target, workflow, IN_FLIGHT, WARM_UP).await?;
    Ok(())
}

/// Adds one window of each kind on `server`, with W10 workflow `workflow` (whose target
/// is `target`), to `measured`.
pub async fn measure(
    server: &Server,
    target: &Arc<Target>,
    workflow: &str,
    window: Duration,
    measured: &mut Measured,
) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let poll = Wait::Poll(Duration::from_millis(5));
    measured
        .throughput
        .push(scenarios::throughput(server, &client, target, workflow, IN_FLIGHT, window).await?);
    measured
        .polling
        .push(clients::closed_loop(server, &client, workflow, IN_FLIGHT, window, poll).await?);
    Ok(())
}

const WARM_UP: Duration = Duration::from_secs(1);
