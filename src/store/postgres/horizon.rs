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
//! Only holders of this lock in this database count: a long transaction of anything else
//! on the cluster never holds the feed back. A server whose writers are busy all the time
//! still advances: it waits only for the holders of one moment, never for later ones.

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
    /// A maximum that becomes safe once all of `holders` have let go of the lock.
    pending: Option<Pending>,
}

struct Pending {
    head: i64,
    holders: Vec<String>,
}

impl Horizon {
    /// The current horizon, advanced as far as the writers allow now. A query that reads
    /// the outbox up to it must start after this returns (a later snapshot).
    pub async fn advance<C: GenericClient>(&self, c: &C) -> Result<u64, StoreError> {
        let mut state = self.state.lock().await;
        let (hi, lo) = (OUTBOX_LOCK >> 32, OUTBOX_LOCK & 0xffff_ffff);
        let probe = c.prepare_cached(PROBE).await.map_err(db_error)?;
        let row = c.query_one(&probe, &[&hi, &lo]).await.map_err(db_error)?;
        let (head, holders): (i64, Vec<String>) = (get(&row, 0)?, get(&row, 1)?);
        if let Some(pending) = &state.pending
            && !pending.holders.iter().any(|h| holders.contains(h))
        {
            state.safe = state.safe.max(pending.head);
            state.pending = None;
        }
        if holders.is_empty() {
            state.safe = state.safe.max(head);
            state.pending = None;
        } else if state.pending.is_none() && head > state.safe {
            state.pending = Some(Pending { head, holders });
        }
        Ok(state.safe.max(0) as u64)
    }
}
