//! How far readers of the PostgreSQL outbox may read: the largest event id below which
//! no event can still appear.
//!
//! Several writers (this server's group-commit tasks and other replicas') insert events
//! at once, and none of them waits for another: an id can become visible after a larger
//! one. A reader that moved its cursor past the larger id would skip the smaller one for
//! good. So every writer transaction holds [`OUTBOX_LOCK`] in *shared* mode from its
//! first statement (shared holders never wait for each other), and readers stop at the
//! horizon, which this module finds in `pg_locks` instead of serialising the writers:
//!
//! One statement reads `MAX(id)` in its snapshot `S`, then the holders of the lock. An
//! event with an id below that maximum that `S` does not show was given its id before
//! the maximum's was (ids come from one sequence, without a per-session cache), so before
//! `S`, by a transaction that held the lock from before then. At the later `pg_locks`
//! read that transaction either still holds the lock, or has ended, and a transaction
//! releases its locks only after it became visible to every later snapshot. So once
//! every holder seen then has let go, every id up to the maximum is visible or never
//! will be, and the maximum is the new horizon. A reader's own query is a later
//! statement, so it sees all of them.
//!
//! A reader that finds holders waits a moment for them to end (they are group commits,
//! milliseconds long), so whatever was committed before it asked is below its horizon.
//! Holders that outlast [`HOLDER_WAIT`] (a stalled writer) are waited for once: until they
//! end, later readers answer at once with the horizon below them.
//! Only holders of this lock in this database count: a long transaction of anything else
//! on the cluster never holds the feed back. A server whose writers are busy all the time
//! still advances: it waits only for the holders of one moment, never for later ones.

use std::time::{Duration, Instant};

use deadpool_postgres::GenericClient;
use tokio::sync::Mutex;

use super::db_error;
use super::rows::get;
use crate::store::StoreError;

/// The advisory lock every transaction that inserts events holds, shared, from its first
/// statement to its end ("orchev" 1).
pub const OUTBOX_LOCK: i64 = 0x6f72_6368_6576_0001;

/// The outbox maximum and the lock's holders, in that order (see the module doc).
/// `pg_locks` shows a bigint advisory key as its high half in `classid`, its low half in
/// `objid`, and `objsubid` 1.
const PROBE: &str = "SELECT (SELECT COALESCE(MAX(id), 0) FROM events), \
     ARRAY(SELECT virtualtransaction FROM pg_locks \
           WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND classid = $1::bigint::oid AND objid = $2::bigint::oid \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))";

/// How long a reader waits for the writers it saw to end before it settles for the last
/// horizon: far beyond a group commit's transaction, short enough that a stalled one
/// only delays readers.
const HOLDER_WAIT: Duration = Duration::from_secs(2);

/// The horizon of one store, advanced by whichever reader asks. One probe at a time: a
/// probe may only retire holders that an earlier probe saw, never those of a later one.
#[derive(Default)]
pub struct Horizon {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Every id up to here is visible or never will be.
    safe: i64,
    /// A maximum that becomes safe once all of `holders` have let go of the lock: set when
    /// a reader stopped waiting for them.
    pending: Option<Pending>,
}

struct Pending {
    head: i64,
    holders: Vec<String>,
}

impl State {
    /// Retires the pending maximum if none of its holders is among `now`.
    fn retire(&mut self, now: &[String]) {
        if let Some(pending) = &self.pending
            && !pending.holders.iter().any(|h| now.contains(h))
        {
            self.safe = self.safe.max(pending.head);
            self.pending = None;
        }
    }
}

impl Horizon {
    /// The current horizon. Writers open when this is called are waited for (up to
    /// [`HOLDER_WAIT`]), so an event committed before the call is below it: a client that
    /// saw a run end finds its events in the feed. A query that reads the outbox up to it
    /// must start after this returns (a later snapshot).
    pub async fn advance<C: GenericClient>(&self, c: &C) -> Result<u64, StoreError> {
        let mut state = self.state.lock().await;
        let (head, holders) = probe(c).await?;
        state.retire(&holders);
        if holders.is_empty() {
            state.safe = state.safe.max(head);
            state.pending = None;
            return Ok(state.safe.max(0) as u64);
        }
        if state.pending.is_some() {
            // Holders an earlier reader waited for in vain are still there (a stalled
            // writer): answer at once rather than make every reader wait its turn.
            return Ok(state.safe.max(0) as u64);
        }
        let deadline = Instant::now() + HOLDER_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            tokio::time::sleep(pause).await;
            let (_, now) = probe(c).await?;
            if !holders.iter().any(|h| now.contains(h)) {
                state.safe = state.safe.max(head);
                break;
            }
            if Instant::now() >= deadline {
                state.pending = Some(Pending { head, holders });
                break;
            }
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        Ok(state.safe.max(0) as u64)
    }
}

/// The outbox maximum and the lock's holders now.
async fn probe<C: GenericClient>(c: &C) -> Result<(i64, Vec<String>), StoreError> {
    let (hi, lo) = (OUTBOX_LOCK >> 32, OUTBOX_LOCK & 0xffff_ffff);
    let statement = c.prepare_cached(PROBE).await.map_err(db_error)?;
    let row = c
        .query_one(&statement, &[&hi, &lo])
        .await
        .map_err(db_error)?;
    Ok((get(&row, 0)?, get(&row, 1)?))
}
