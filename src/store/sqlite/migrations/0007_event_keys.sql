-- The outbox's filter keys (by run, by workflow, by event type) move from three indexes,
-- which every event wrote as it was appended, to one table the writer fills in sorted
-- batches behind the outbox (see store/sqlite/event_keys.rs). `event_keys_done.upto` is
-- the newest event whose keys are in; readers scan the few events above it directly.
CREATE TABLE event_keys (
    -- 'r:' || run_id, 'w:' || workflow_id, 't:' || the event's type
    key TEXT NOT NULL,
    id  INTEGER NOT NULL,
    PRIMARY KEY (key, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE event_keys_done (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    upto INTEGER NOT NULL
) STRICT;

INSERT INTO event_keys (key, id)
SELECT key, id FROM (
    SELECT 'r:' || run_id AS key, id FROM events
    UNION ALL SELECT 'w:' || workflow_id, id FROM events
    UNION ALL SELECT 't:' || json_extract(body, '$.type'), id FROM events
) ORDER BY key, id;
INSERT INTO event_keys_done (id, upto) SELECT 1, COALESCE(MAX(id), 0) FROM events;

DROP INDEX events_by_run;
DROP INDEX events_by_workflow;
DROP INDEX events_by_type;
