-- The run journal (see store/sqlite/journal.rs): what each transition of a run changes
-- after its start — the step rows it writes, the log entries it adds, where a re-run cuts
-- the steps — as one row per transition instead of a step upsert and a log insert per row.
-- A row's entries are numbered `log_end - n + 1 ..= log_end`; `log_end` never decreases
-- from one transition of a run to the next, so the key reads in commit order and a log read
-- seeks to the first row past its `after`. Rows written before this migration stay in
-- `step_runs` and `run_logs`, which readers take as the base the journal applies to.
-- `runs.journal_bytes` counts the step JSON a run's journal holds and `runs.base_bytes`
-- that of its `step_runs` rows: once the first passes both the second and 256 KiB, the
-- transition folds the journal's steps into `step_runs` (a long `foreach` rewrites its
-- step at every commit), so neither what is kept nor what a read parses grows without end.
CREATE TABLE run_journal (
    run_id  TEXT NOT NULL,
    log_end INTEGER NOT NULL,
    rev     INTEGER NOT NULL,
    cut     INTEGER,
    steps   TEXT,
    outputs TEXT,
    logs    TEXT,
    PRIMARY KEY (run_id, log_end, rev)
) STRICT, WITHOUT ROWID;

ALTER TABLE runs ADD COLUMN journal_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN base_bytes INTEGER NOT NULL DEFAULT 0;
