-- Triggers (DESIGN §10) and the events feed (§11).

-- What started a run (a schedule's tick, a webhook delivery) as JSON; NULL for POST /v1/runs.
ALTER TABLE runs ADD COLUMN trigger_info TEXT;

CREATE TABLE schedules (
    id             TEXT PRIMARY KEY,
    workflow_id    TEXT NOT NULL,
    cron           TEXT NOT NULL,
    timezone       TEXT NOT NULL,
    context        TEXT NOT NULL,
    overlap        TEXT NOT NULL,
    paused         BOOLEAN NOT NULL,
    -- The next tick not yet fired; NULL while paused. Claims compare-and-set it.
    next_fire_at   BIGINT,
    last_fire_time BIGINT,
    last_run_id    TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    created_by     TEXT
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;

CREATE TABLE webhook_triggers (
    name          TEXT PRIMARY KEY,
    workflow_id   TEXT NOT NULL,
    -- Kept as given: an HMAC needs the secret itself. Never served by the API.
    secret        TEXT,
    secret_header TEXT NOT NULL,
    context       TEXT,
    filter        TEXT,
    created_at    BIGINT NOT NULL,
    created_by    TEXT
);

-- The events feed's filters read the outbox by run, by workflow and by type.
CREATE INDEX events_by_run ON events (run_id, id);
CREATE INDEX events_by_workflow ON events (workflow_id, id);
CREATE INDEX events_by_type ON events ((body::json ->> 'type'), id);
