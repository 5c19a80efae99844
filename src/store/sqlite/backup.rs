//! A consistent copy of the embedded store, taken while the server runs
//! (`orchestrator backup FILE`).
//!
//! `VACUUM INTO` copies the database as one read transaction on a connection of its own:
//! the copy is the state of one instant (the last commit before it started, WAL
//! included), compacted, and the server's writers go on meanwhile (WAL mode lets readers
//! and the writer run together). The copy is then opened and checked before it is
//! reported as done.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::pool::{self, unavailable};
use crate::store::StoreError;

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The copy's size in bytes.
    pub bytes: u64,
    /// Runs in the copy.
    pub runs: u64,
    pub took: Duration,
}

/// Copies the store at `db` into the new file `target` and checks the copy.
pub fn backup(db: &Path, target: &Path) -> Result<BackupReport, StoreError> {
    let started = Instant::now();
    if !db.exists() {
        return Err(StoreError::NotFound(format!(
            "the database {} (database.path)",
            db.display()
        )));
    }
    if target.exists() {
        return Err(StoreError::Invalid(format!(
            "{} exists; a backup goes to a new file",
            target.display()
        )));
    }
    let Some(target_text) = target.to_str() else {
        return Err(StoreError::Invalid(format!(
            "{} is not a UTF-8 path",
            target.display()
        )));
    };
    let source = pool::open(db, false, pool::READER_CACHE_KIB)?;
    let copied = source
        .execute("VACUUM INTO ?1", [target_text])
        .map_err(|e| StoreError::unavailable_by(format!("copying into {target_text}"), e))
        .and_then(|_| check_copy(target, target_text));
    match copied {
        Ok(runs) => Ok(BackupReport {
            bytes: std::fs::metadata(target).map(|m| m.len()).unwrap_or(0),
            runs,
            took: started.elapsed(),
        }),
        Err(e) => {
            // A copy cut short (a full disk) or failing its check is no backup.
            let _ = std::fs::remove_file(target);
            Err(e)
        }
    }
}

/// Opens the copy at `target`, checks its integrity, and counts its runs.
fn check_copy(target: &Path, target_text: &str) -> Result<u64, StoreError> {
    let copy = Connection::open_with_flags(target, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(unavailable)?;
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(unavailable)?;
    if check != "ok" {
        return Err(StoreError::Corrupt {
            what: format!("the copy {target_text} fails its integrity check: {check}"),
            cause: None,
        });
    }
    let runs: i64 = copy
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .map_err(unavailable)?;
    Ok(runs.max(0) as u64)
}
