-- What API users reach for (issue 21): archived workflows, the re-run history and token
-- budget of runs, deleted runs remembered (who, when), and an index for run search.

ALTER TABLE workflows ADD COLUMN archived_at INTEGER;
ALTER TABLE workflows ADD COLUMN archived_by TEXT;

-- RetryRecord[] as JSON, oldest first; RunBudget as JSON, NULL without a budget.
ALTER TABLE runs ADD COLUMN retries TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN budget TEXT;

CREATE INDEX runs_by_workflow_version ON runs (workflow_id, workflow_version, id);

CREATE TABLE deleted_runs (
    id          TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    deleted_at  INTEGER NOT NULL,
    deleted_by  TEXT NOT NULL
) STRICT;
