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
-- writes it. Values over 128 characters are not indexed (a search for one reads the
-- contexts instead), nor are nested members. Rows are removed by their primary key, from
-- the old context's own members, so no second index is needed.
CREATE TABLE run_context_index (
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (key, value, run_id)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER runs_context_indexed AFTER INSERT ON runs BEGIN
    INSERT OR IGNORE INTO run_context_index (key, value, run_id)
    SELECT j.key, CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE json_quote(j.value) END, new.id
    FROM json_each(new.context) AS j
    WHERE j.type NOT IN ('object', 'array') AND length(CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE json_quote(j.value) END) <= 128;
END;
CREATE TRIGGER runs_context_reindexed AFTER UPDATE OF context ON runs
WHEN new.context IS NOT old.context BEGIN
    DELETE FROM run_context_index WHERE run_id = old.id AND (key, value) IN (
        SELECT j.key, CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE json_quote(j.value) END FROM json_each(old.context) AS j
        WHERE j.type NOT IN ('object', 'array'));
    INSERT OR IGNORE INTO run_context_index (key, value, run_id)
    SELECT j.key, CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE json_quote(j.value) END, new.id
    FROM json_each(new.context) AS j
    WHERE j.type NOT IN ('object', 'array') AND length(CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE json_quote(j.value) END) <= 128;
END;
CREATE TRIGGER runs_context_unindexed AFTER DELETE ON runs BEGIN
    DELETE FROM run_context_index WHERE run_id = old.id AND (key, value) IN (
        SELECT j.key, CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE json_quote(j.value) END FROM json_each(old.context) AS j
        WHERE j.type NOT IN ('object', 'array'));
END;

INSERT OR IGNORE INTO run_context_index (key, value, run_id)
SELECT j.key, CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE json_quote(j.value) END, r.id
FROM runs AS r, json_each(r.context) AS j
WHERE j.type NOT IN ('object', 'array') AND length(CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE json_quote(j.value) END) <= 128;
