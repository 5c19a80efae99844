-- What API users reach for (issue 21): archived workflows, the re-run history and token
-- budget of runs, deleted runs remembered (who, when), and indexes for run search.

ALTER TABLE workflows ADD COLUMN archived_at BIGINT, ADD COLUMN archived_by TEXT;

-- RetryRecord[] as JSON, oldest first; RunBudget as JSON, NULL without a budget.
ALTER TABLE runs ADD COLUMN retries TEXT NOT NULL DEFAULT '[]', ADD COLUMN budget TEXT;

CREATE INDEX runs_by_workflow_version ON runs (workflow_id, workflow_version, id);
-- context.KEY=VALUE searches are containment tests (context::jsonb @> '{"KEY": VALUE}'),
-- which this index answers for any key. The context column stays TEXT (byte for byte).
CREATE INDEX runs_by_context ON runs USING GIN ((context::jsonb) jsonb_path_ops);

CREATE TABLE deleted_runs (
    id          TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    deleted_at  BIGINT NOT NULL,
    deleted_by  TEXT NOT NULL
);
