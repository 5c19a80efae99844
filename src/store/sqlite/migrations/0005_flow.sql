-- Flow control: child runs, what a waiting step waits for, foreach items, kept events.
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE runs ADD COLUMN extra TEXT;
ALTER TABLE step_runs ADD COLUMN extra TEXT;
CREATE INDEX runs_by_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
-- approval_deadline now holds when any parked run must be woken (WAITING too).
