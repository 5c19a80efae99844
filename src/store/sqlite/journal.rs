//! The run journal: a transition's step rows, log entries and re-run cut written as one
//! row of `run_journal`, keyed `(run_id, log_end, rev)`, instead of an upsert per step and
//! an insert per log entry (each of which dirtied a page of that run in its own b-tree).
//!
//! Invariants: a run's rows read in key order are its transitions in commit order, because
//! `log_end` (the run's last log `seq` after the transition) never decreases and `rev`
//! increases. A run's steps are its `step_runs` rows (written at its start, before this
//! journal existed, or by [`compact`]) with its journal rows' steps applied in that order;
//! its log is its `run_logs` rows (its start's entries, client lines, entries from before
//! the journal) merged by `seq` with the journal's entries. Rows are inserted, and change
//! only when [`compact`] folds their steps into `step_runs` (keeping their entries) or
//! when their run is deleted. Outputs sit in a column of their own so that summary reads
//! never parse them.

use rusqlite::{Connection, params};
use serde_json::Value;

use crate::model::{LogEntry, NewLogEntry, Run, StatusChange, StepExtra, StepRun};
use crate::store::StoreError;

use super::pool::unavailable;
use super::rows::{from_ms, json, ms, parse, to_json};

/// A run's journal steps are folded into `step_runs` once they pass this many bytes of
/// JSON and the run's `step_runs` rows too (so that folding costs, over a run's life, a
/// constant times what it writes).
pub const COMPACT_BYTES: u64 = 256 * 1024;

/// A transition's journal row, encoded before its guarded update (which counts its bytes).
#[derive(Debug, Default)]
pub struct Encoded {
    steps: Option<String>,
    outputs: Option<String>,
    logs: Option<String>,
}

impl Encoded {
    /// Bytes of step JSON (outputs included) the row holds.
    pub fn step_bytes(&self) -> u64 {
        (self.steps.as_ref().map_or(0, String::len) + self.outputs.as_ref().map_or(0, String::len))
            as u64
    }
}

/// Encodes a transition's steps and log entries.
pub fn encode(steps: &[(usize, StepRun)], logs: &[NewLogEntry]) -> Encoded {
    let records: Vec<StepRecord<'_>> = (steps.iter())
        .map(|(idx, step)| step_record(*idx, step))
        .collect();
    let outputs: Vec<(usize, &Value)> = (steps.iter())
        .filter_map(|(idx, step)| step.output.as_ref().map(|o| (*idx, o)))
        .collect();
    let logs: Vec<LogRecord<'_>> = (logs.iter())
        .map(|e| {
            (
                ms(e.ts),
                e.level.as_str(),
                e.source.as_str(),
                e.step.as_deref(),
                e.message.as_str(),
                e.status.as_ref(),
            )
        })
        .collect();
    Encoded {
        steps: (!records.is_empty()).then(|| to_json(&records)),
        outputs: (!outputs.is_empty()).then(|| to_json(&outputs)),
        logs: (!logs.is_empty()).then(|| to_json(&logs)),
    }
}

/// Where a journal row goes: the run, its revision after the transition, its last log
/// `seq` after it, and where a re-run cut its steps (before the row's steps apply).
pub struct Position<'a> {
    pub run_id: &'a str,
    pub rev: u64,
    pub log_end: u64,
    pub cut: Option<usize>,
}

/// Appends one transition's row; nothing when it wrote no step, entry or cut.
pub fn append(conn: &Connection, at: Position<'_>, row: Encoded) -> Result<(), StoreError> {
    if row.steps.is_none() && row.logs.is_none() && at.cut.is_none() {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO run_journal (run_id, log_end, rev, cut, steps, outputs, logs) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            at.run_id,
            at.log_end as i64,
            at.rev as i64,
            at.cut.map(|c| c as i64),
            row.steps,
            row.outputs,
            row.logs,
        ])
    })
    .map_err(unavailable)?;
    Ok(())
}

/// Folds `run_id`'s journal steps into `step_runs`: its step rows become the run's steps as
/// read now, and its journal keeps only log entries.
pub fn compact(conn: &Connection, run_id: &str) -> Result<(), StoreError> {
    let run = super::rows::load_run(conn, run_id)?;
    let run_step = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([run_id]))
            .map_err(unavailable)
    };
    run_step("DELETE FROM step_runs WHERE run_id = ?1")?;
    let mut base = 0;
    for (idx, step) in run.steps.iter().enumerate() {
        base += super::rows::put_step(conn, run_id, idx, step)?;
    }
    run_step(
        "UPDATE run_journal SET cut = NULL, steps = NULL, outputs = NULL \
         WHERE run_id = ?1 AND logs IS NOT NULL AND (steps IS NOT NULL OR cut IS NOT NULL)",
    )?;
    run_step("DELETE FROM run_journal WHERE run_id = ?1 AND logs IS NULL")?;
    conn.prepare_cached("UPDATE runs SET journal_bytes = 0, base_bytes = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![run_id, base as i64]))
        .map_err(unavailable)?;
    Ok(())
}

/// A step as the journal keeps it, as a JSON array: index, id, name, action, status,
/// error, HTTP code, attempts, started / finished / waiting-since (ms), truncated,
/// interruptions, and the parts `step_runs` keeps in its `extra` column. Its output is
/// kept apart.
type StepRecord<'a> = (
    usize,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<u16>,
    &'a [crate::model::Attempt],
    Option<i64>,
    Option<i64>,
    Option<i64>,
    bool,
    u32,
    Option<StepExtra>,
);
type StepRecordOwned = (
    usize,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<u16>,
    Vec<crate::model::Attempt>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    bool,
    u32,
    Option<StepExtra>,
);

fn step_record(idx: usize, s: &StepRun) -> StepRecord<'_> {
    (
        idx,
        &s.step_id,
        &s.name,
        &s.action,
        s.status.as_str(),
        s.error.as_deref(),
        s.http_code,
        &s.attempts,
        s.started_at.map(ms),
        s.finished_at.map(ms),
        s.waiting_since.map(ms),
        s.output_truncated,
        s.interruptions,
        StepExtra::of(s),
    )
}

fn step_of(record: StepRecordOwned) -> Result<(usize, StepRun), StoreError> {
    let (idx, step_id, name, action, status, error, http_code, attempts, started, finished) = (
        record.0, record.1, record.2, record.3, record.4, record.5, record.6, record.7, record.8,
        record.9,
    );
    let mut step = StepRun {
        step_id,
        name,
        action,
        status: parse(&status)?,
        error,
        output: None,
        http_code,
        attempts,
        started_at: started.map(from_ms),
        finished_at: finished.map(from_ms),
        waiting_since: record.10.map(from_ms),
        output_truncated: record.11,
        interruptions: record.12,
        waiting: None,
        items: None,
        over: None,
    };
    if let Some(extra) = record.13 {
        extra.apply(&mut step);
    }
    Ok((idx, step))
}

/// A log entry as the journal keeps it: `ts` (ms), level, source, step, message, status.
type LogRecord<'a> = (
    i64,
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    Option<&'a StatusChange>,
);
type LogRecordOwned = (
    i64,
    String,
    String,
    Option<String>,
    String,
    Option<StatusChange>,
);

/// How much of a run's steps a read wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepView {
    /// Every field, outputs included.
    Full,
    /// No outputs, attempts or waiting details (list summaries).
    Summary,
}

/// Applies `run`'s journal to the steps read from `step_runs`; the bytes of step JSON read.
pub fn apply(conn: &Connection, run: &mut Run, view: StepView) -> Result<usize, StoreError> {
    let sql = match view {
        StepView::Full => {
            "SELECT cut, steps, outputs FROM run_journal WHERE run_id = ?1 \
             AND (steps IS NOT NULL OR cut IS NOT NULL) ORDER BY log_end, rev"
        }
        StepView::Summary => {
            "SELECT cut, steps, NULL FROM run_journal WHERE run_id = ?1 \
             AND (steps IS NOT NULL OR cut IS NOT NULL) ORDER BY log_end, rev"
        }
    };
    let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
    let mut rows = stmt.query([&run.id]).map_err(unavailable)?;
    let mut bytes = 0;
    while let Some(row) = rows.next().map_err(unavailable)? {
        let cut: Option<i64> = row.get(0).map_err(unavailable)?;
        let steps: Option<String> = row.get(1).map_err(unavailable)?;
        let outputs: Option<String> = row.get(2).map_err(unavailable)?;
        if let Some(cut) = cut {
            run.steps.truncate(cut.max(0) as usize);
        }
        let Some(steps) = steps else { continue };
        bytes += steps.len() + outputs.as_ref().map_or(0, String::len);
        let records: Vec<StepRecordOwned> = json(&steps)?;
        let mut outputs: Vec<(usize, Value)> = match outputs {
            Some(text) => json(&text)?,
            None => Vec::new(),
        };
        for record in records {
            let (idx, mut step) = step_of(record)?;
            if let Some(at) = outputs.iter().position(|(i, _)| *i == idx) {
                step.output = Some(outputs.swap_remove(at).1);
            }
            if view == StepView::Summary {
                step.attempts = Vec::new();
                step.waiting = None;
                step.items = None;
                step.over = None;
            }
            match run.steps.get_mut(idx) {
                Some(slot) => *slot = step,
                // Steps are written at their index in a list the run's start wrote whole,
                // so a new index is the next one.
                None => run.steps.push(step),
            }
        }
    }
    Ok(bytes)
}

/// The journal's entries of `run_id` after `seq` `after`, at most `limit`, in order.
pub fn read_logs(
    conn: &Connection,
    run_id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<LogEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT log_end, logs FROM run_journal WHERE run_id = ?1 AND log_end > ?2 \
             AND logs IS NOT NULL ORDER BY log_end, rev",
        )
        .map_err(unavailable)?;
    let mut rows = stmt
        .query(params![run_id, after as i64])
        .map_err(unavailable)?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(row) = rows.next().map_err(unavailable)? else {
            break;
        };
        let log_end = row.get::<_, i64>(0).map_err(unavailable)?.max(0) as u64;
        let text: String = row.get(1).map_err(unavailable)?;
        let records: Vec<LogRecordOwned> = json(&text)?;
        let first = (log_end + 1).saturating_sub(records.len() as u64);
        for (i, (ts, level, source, step, message, status)) in records.into_iter().enumerate() {
            let seq = first + i as u64;
            if seq <= after || out.len() == limit {
                continue;
            }
            out.push(LogEntry {
                seq,
                ts: from_ms(ts),
                level: parse(&level)?,
                source: parse(&source)?,
                step,
                message,
                status,
            });
        }
    }
    Ok(out)
}

/// Two runs of entries each in `seq` order, merged, at most `limit`.
pub fn merge(a: Vec<LogEntry>, b: Vec<LogEntry>, limit: usize) -> Vec<LogEntry> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity((a.len() + b.len()).min(limit));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while out.len() < limit {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.seq <= y.seq => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => None,
        };
        match next {
            Some(entry) => out.push(entry),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LogLevel, LogSource, NewLogEntry, RunStatus, StepStatus};
    use std::sync::Arc;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        super::super::migrate(&conn).unwrap();
        conn
    }

    fn entry(seq: u64, message: &str) -> LogEntry {
        NewLogEntry::engine(LogLevel::Info, Some("a"), message).into_entry(seq)
    }

    fn step(id: &str, status: StepStatus) -> StepRun {
        let mut s = StepRun::pending(id.into(), id.into(), "http".into());
        s.status = status;
        s
    }

    fn run(steps: Vec<StepRun>) -> Run {
        let mut run = crate::store::NewRun {
            id: "r".into(),
            workflow_id: "w".into(),
            workflow_version: 1,
            context: Default::default(),
            steps,
            parent: None,
            owner: None,
            idempotency: None,
            logs: Vec::new(),
            events: Vec::new(),
            budget: None,
            trigger: None,
            schedule: None,
        }
        .into_run(crate::model::now());
        run.id = "r".into();
        run
    }

    #[test]
    fn steps_fold_in_commit_order_with_outputs_cuts_and_bookkeeping() {
        let conn = conn();
        let mut done = step("a", StepStatus::Succeeded);
        done.output = Some(serde_json::json!({"n": 1}));
        done.interruptions = 2;
        done.items = Some(Vec::new());
        done.over = Some(Arc::new(vec![serde_json::json!(7)]));
        done.started_at = Some(crate::model::now());
        let rows = [
            (1, None, vec![(0, step("a", StepStatus::Running))]),
            (
                2,
                None,
                vec![(0, done.clone()), (1, step("b", StepStatus::Running))],
            ),
            // A re-run from step 1 with a new third step.
            (
                3,
                Some(1),
                vec![
                    (1, step("b2", StepStatus::Pending)),
                    (2, step("c", StepStatus::Pending)),
                ],
            ),
        ];
        for (rev, cut, steps) in rows {
            let at = Position {
                run_id: "r",
                rev,
                log_end: 0,
                cut,
            };
            append(&conn, at, encode(&steps, &[])).unwrap();
        }
        let base = vec![
            step("a", StepStatus::Pending),
            step("b", StepStatus::Pending),
            step("x", StepStatus::Pending),
        ];
        let mut full = run(base.clone());
        apply(&conn, &mut full, StepView::Full).unwrap();
        let ids: Vec<&str> = full.steps.iter().map(|s| s.step_id.as_str()).collect();
        assert_eq!(ids, ["a", "b2", "c"]);
        assert_eq!(full.steps[0], done);

        let mut summary = run(base);
        apply(&conn, &mut summary, StepView::Summary).unwrap();
        assert_eq!(summary.steps[0].output, None);
        assert_eq!(summary.steps[0].status, StepStatus::Succeeded);
    }

    #[test]
    fn a_run_written_before_the_journal_reads_on_with_its_old_rows_under_the_new_ones() {
        use crate::store::{Guard, Transition};
        use rusqlite::params;

        let conn = conn();
        let start = crate::store::NewRun {
            id: "r".into(),
            workflow_id: "w".into(),
            workflow_version: 1,
            context: Default::default(),
            steps: vec![
                step("a", StepStatus::Pending),
                step("b", StepStatus::Pending),
            ],
            parent: None,
            owner: None,
            idempotency: None,
            logs: vec![NewLogEntry::engine(LogLevel::Info, None, "one")],
            events: Vec::new(),
            budget: None,
            trigger: None,
            schedule: None,
        };
        super::super::runs::create_run(&conn, start).unwrap();
        // What a transition wrote before migration 8: a step row and a log row.
        let mut done = step("a", StepStatus::Succeeded);
        done.output = Some(serde_json::json!({"old": true}));
        super::super::rows::put_step(&conn, "r", 0, &done).unwrap();
        let old = vec![NewLogEntry::engine(LogLevel::Info, Some("a"), "two")];
        super::super::rows::put_logs(&conn, "r", 2, old).unwrap();
        conn.execute(
            "UPDATE runs SET rev = 1, log_seq = 2 WHERE id = ?1",
            params!["r"],
        )
        .unwrap();

        let mut tx = Transition::new("r", Guard::default());
        let mut b = step("b", StepStatus::Succeeded);
        b.output = Some(serde_json::json!({"new": true}));
        tx.steps = vec![(1, b.clone())];
        tx.logs = vec![NewLogEntry::engine(LogLevel::Info, Some("b"), "three")];
        assert_eq!(super::super::runs::commit(&conn, tx).unwrap().rev, 2);

        let read = super::super::rows::load_run(&conn, "r").unwrap();
        assert_eq!(read.steps, vec![done, b]);
        let log = super::super::rows::read_logs(&conn, "r", 0, 10).unwrap();
        let lines: Vec<(u64, &str)> = log.iter().map(|e| (e.seq, e.message.as_str())).collect();
        assert_eq!(lines, [(1, "one"), (2, "two"), (3, "three")]);
        let tail = super::super::rows::read_logs(&conn, "r", 1, 1).unwrap();
        assert_eq!(tail[0].message, "two");
    }

    #[test]
    fn a_run_rewriting_a_large_step_keeps_a_bounded_journal_and_reads_its_latest_state() {
        use crate::store::{Guard, Transition};

        let conn = conn();
        let new = crate::store::NewRun {
            id: "r".into(),
            workflow_id: "w".into(),
            workflow_version: 1,
            context: Default::default(),
            steps: vec![
                step("a", StepStatus::Pending),
                step("b", StepStatus::Pending),
            ],
            parent: None,
            owner: None,
            idempotency: None,
            logs: Vec::new(),
            events: Vec::new(),
            budget: None,
            trigger: None,
            schedule: None,
        };
        super::super::runs::create_run(&conn, new).unwrap();
        // A step rewritten whole at every commit, as a long `foreach` step is, 20 KiB more
        // each time: 2.6 MiB written over 16 commits.
        let mut last = step("a", StepStatus::Running);
        for n in 1..=16 {
            last.output = Some(serde_json::json!("x".repeat(n * 20 * 1024)));
            let mut tx = Transition::new("r", Guard::default());
            tx.steps = vec![(0, last.clone())];
            tx.logs = vec![NewLogEntry::engine(
                LogLevel::Info,
                Some("a"),
                format!("{n}"),
            )];
            if n == 9 {
                // A re-run keeping the first step.
                tx.rerun = Some(crate::store::Rerun {
                    retries: Vec::new(),
                    workflow_version: 1,
                    budget: None,
                    steps: 1,
                });
            }
            super::super::runs::commit(&conn, tx).unwrap();
            let held: i64 = conn
                .query_row(
                    "SELECT COALESCE(SUM(length(steps) + COALESCE(length(outputs), 0)), 0) \
                     FROM run_journal WHERE run_id = 'r'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            let base: i64 = conn
                .query_row("SELECT base_bytes FROM runs WHERE id = 'r'", [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert!(
                held as u64 <= COMPACT_BYTES.max(base as u64) + (n as u64 + 1) * 20 * 1024,
                "commit {n}: the journal holds {held} bytes of steps over {base} in step_runs"
            );
        }
        let read = super::super::rows::load_run(&conn, "r").unwrap();
        assert_eq!(read.steps, vec![last], "the re-run cut the second step");
        let log = super::super::rows::read_logs(&conn, "r", 0, 100).unwrap();
        let lines: Vec<String> = log.iter().map(|e| e.message.clone()).collect();
        assert_eq!(lines, (1..=16).map(|n| n.to_string()).collect::<Vec<_>>());
        let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=16).collect::<Vec<u64>>());
        let folded: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM step_runs WHERE run_id = 'r'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(folded, 1, "step_runs holds the folded steps");
    }

    #[test]
    fn log_reads_seek_past_after_and_merge_with_rows_kept_elsewhere_in_seq_order() {
        let conn = conn();
        let line = |m: &str| NewLogEntry::engine(LogLevel::Info, Some("a"), m);
        let mut announcing = line("three");
        announcing.status = Some(StatusChange {
            run_status: RunStatus::Running,
            step: Some("a".into()),
            step_status: Some(StepStatus::Running),
        });
        // Entries 1 and 4 were written elsewhere (a run's start, a client's line).
        let batches = [
            (1, 3, vec![line("two"), announcing.clone()]),
            (2, 3, vec![]),
            (3, 6, vec![line("five"), line("six")]),
        ];
        for (rev, log_end, logs) in batches {
            let at = Position {
                run_id: "r",
                rev,
                log_end,
                cut: None,
            };
            let steps = [(0, step("a", StepStatus::Running))];
            append(&conn, at, encode(&steps, &logs)).unwrap();
        }
        let journal = read_logs(&conn, "r", 0, 100).unwrap();
        let seqs: Vec<u64> = journal.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3, 5, 6]);
        assert_eq!(journal[1], announcing.into_entry(3));
        assert_eq!(journal[1].source, LogSource::Engine);

        let after = read_logs(&conn, "r", 3, 1).unwrap();
        assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);

        let merged = merge(vec![entry(1, "one"), entry(4, "four")], journal, 5);
        let seqs: Vec<u64> = merged.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }
}
