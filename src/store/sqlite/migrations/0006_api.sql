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

-- context.KEY=VALUE searches: the top-level scalar members of each run's context as JSON
-- text (so "2" and 2 stay apart), kept by triggers on every write of a context, whoever
-- writes it. Values over 256 characters are not indexed (a search for one reads the
-- contexts instead), nor are nested members.
CREATE TABLE run_context_index (
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (key, value, run_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX run_context_index_by_run ON run_context_index (run_id);

CREATE VIEW run_context_members AS
SELECT r.id AS run_id, j.key AS key,
       CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                   ELSE json_quote(j.value) END AS value
FROM runs AS r, json_each(r.context) AS j
WHERE j.type NOT IN ('object', 'array');

CREATE TRIGGER runs_context_indexed AFTER INSERT ON runs BEGIN
    INSERT OR IGNORE INTO run_context_index (key, value, run_id)
    SELECT key, value, run_id FROM run_context_members
    WHERE run_id = new.id AND length(value) <= 256;
END;
CREATE TRIGGER runs_context_reindexed AFTER UPDATE OF context ON runs
WHEN new.context IS NOT old.context BEGIN
    DELETE FROM run_context_index WHERE run_id = old.id;
    INSERT OR IGNORE INTO run_context_index (key, value, run_id)
    SELECT key, value, run_id FROM run_context_members
    WHERE run_id = new.id AND length(value) <= 256;
END;
CREATE TRIGGER runs_context_unindexed AFTER DELETE ON runs BEGIN
    DELETE FROM run_context_index WHERE run_id = old.id;
END;
INSERT OR IGNORE INTO run_context_index (key, value, run_id)
SELECT key, value, run_id FROM run_context_members WHERE length(value) <= 256;
