-- The store's lifecycle: poison-run quarantine, retention, hook delivery leases,
-- readiness probes.

-- How many times in a row the process died while this step was in flight.
ALTER TABLE step_runs ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0;
-- Set when the run's last owner left it deliberately (graceful shutdown): its steps in
-- flight were cut off, not struck down. Cleared when an owner executes it again.
ALTER TABLE runs ADD COLUMN left_cleanly INTEGER NOT NULL DEFAULT 0;

-- Retention finds finished runs by age, and deletes what belongs to them by run.
CREATE INDEX runs_by_finish ON runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX idempotency_by_run ON idempotency_keys (run_id);
-- events_by_run (run_id, id) comes from 0004_triggers.

-- When each hook event happened (its `ts`), for pruning by age.
ALTER TABLE events ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
UPDATE events SET created_at =
    CAST((julianday(json_extract(body, '$.ts')) - 2440587.5) * 86400000 AS INTEGER);

-- Only the holder of a target's lease delivers its hooks.
CREATE TABLE hook_leases (
    target     TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

-- One row that readiness rewrites to prove the store takes writes.
CREATE TABLE probes (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL
) STRICT;
