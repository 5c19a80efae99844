//! Prefixed, time-sortable identifiers (`wf_<ULID>`, `run_<ULID>`).
//!
//! ULIDs sort by creation time, so ordering by id is ordering by age; list cursors rely on it.

use std::sync::Mutex;

use ulid::Generator;

/// Prefix of generated workflow ids.
pub const WORKFLOW: &str = "wf_";
/// Prefix of generated run ids.
pub const RUN: &str = "run_";
/// Prefix of generated schedule ids.
pub const SCHEDULE: &str = "sch_";
/// Prefix of generated task ids.
pub const TASK: &str = "task_";

static GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());

/// A new id with `prefix`, e.g. `new(RUN)` → `run_01J…`. Ids made by one process increase
/// strictly, even within a millisecond.
pub fn new(prefix: &str) -> String {
    let mut generator = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
    let id = generator
        .generate()
        .unwrap_or_else(|overflow| overflow.commit_overflow_increment());
    format!("{prefix}{id}")
}

/// A fresh owner identity for one server process (lease holder).
pub fn new_owner() -> String {
    new("node_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_sort_by_creation() {
        let a = new(RUN);
        let b = new(RUN);
        assert!(a.starts_with("run_") && a.len() == 4 + 26);
        assert!(a < b);
    }
}
