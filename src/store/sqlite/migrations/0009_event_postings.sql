-- The outbox's filter keys become posting lists: one row per key per pass of the writer's
-- key pass (store/sqlite/event_keys.rs), holding the ids of that pass's events with the
-- key, instead of one row per event and key. A pass writes a row per run, workflow and
-- type in it (dozens) instead of three per event (thousands), the b-tree inserts that were
-- an eighth of a step's instructions. `ids` is the ascending ids as decimal text, the first
-- in full and each next as its difference to the one before ("1200,3,1,7").
CREATE TABLE event_postings (
    id       INTEGER PRIMARY KEY,
    -- 'r:' || run_id, 'w:' || workflow_id, 't:' || the event's type
    key      TEXT NOT NULL,
    first_id INTEGER NOT NULL,
    last_id  INTEGER NOT NULL,
    ids      TEXT NOT NULL
) STRICT;
CREATE INDEX event_postings_by_key ON event_postings (key, last_id, first_id);

-- The keys already written, a posting per key and 4,096 ids of the outbox.
INSERT INTO event_postings (key, first_id, last_id, ids)
SELECT key, MIN(id), MAX(id), group_concat(delta, ',' ORDER BY id)
FROM (
    SELECT key, id, id / 4096 AS part,
           id - COALESCE(LAG(id) OVER (PARTITION BY key, id / 4096 ORDER BY id), 0) AS delta
    FROM event_keys
)
GROUP BY key, part
ORDER BY key, part;

DROP TABLE event_keys;
