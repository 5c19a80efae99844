-- Times are Unix milliseconds (UTC); JSON documents are TEXT, kept byte for byte (key
-- order matters to clients, and jsonb would reorder keys).
CREATE TABLE workflows (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    latest_version BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX workflows_by_age ON workflows (created_at, id);

CREATE TABLE workflow_versions (
    workflow_id   TEXT NOT NULL REFERENCES workflows (id),
    version       BIGINT NOT NULL,
    name          TEXT NOT NULL,
    definition    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    created_by    TEXT,
    restored_from BIGINT,
    PRIMARY KEY (workflow_id, version)
);

CREATE TABLE templates (
    name       TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT
);

CREATE TABLE runs (
    id                TEXT PRIMARY KEY,
    workflow_id       TEXT NOT NULL,
    workflow_version  BIGINT NOT NULL,
    status            TEXT NOT NULL,
    current_step      BIGINT NOT NULL,
    context           TEXT NOT NULL,
    error             TEXT,
    usage             TEXT NOT NULL DEFAULT '{}',
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    rev               BIGINT NOT NULL DEFAULT 0,
    owner             TEXT,
    lease_expires_at  BIGINT,
    approval_deadline BIGINT,
    active_ms         BIGINT NOT NULL DEFAULT 0,
    log_seq           BIGINT NOT NULL DEFAULT 0,
    event_seq         BIGINT NOT NULL DEFAULT 0
);
-- One index per list filter (ids sort by time, so `id` is the page order).
CREATE INDEX runs_by_workflow ON runs (workflow_id, id);
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_by_workflow_status ON runs (workflow_id, status, id);
-- Claims scan only the runs that may need an owner.
CREATE INDEX runs_to_claim ON runs (id) WHERE status IN ('PENDING', 'RUNNING');
CREATE INDEX runs_by_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_by_approval_deadline ON runs (approval_deadline)
    WHERE approval_deadline IS NOT NULL;

CREATE TABLE step_runs (
    run_id        TEXT NOT NULL,
    idx           BIGINT NOT NULL,
    step_id       TEXT NOT NULL,
    name          TEXT NOT NULL,
    action        TEXT NOT NULL,
    status        TEXT NOT NULL,
    error         TEXT,
    output        TEXT,
    http_code     BIGINT,
    attempts      TEXT NOT NULL DEFAULT '[]',
    started_at    BIGINT,
    finished_at   BIGINT,
    waiting_since BIGINT,
    truncated     BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE approvals (
    run_id   TEXT NOT NULL,
    n        BIGINT NOT NULL,
    step     TEXT NOT NULL,
    decision TEXT NOT NULL,
    by_name  TEXT NOT NULL,
    at       BIGINT NOT NULL,
    comment  TEXT,
    input    TEXT,
    PRIMARY KEY (run_id, n)
);

CREATE TABLE run_logs (
    run_id  TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    ts      BIGINT NOT NULL,
    level   TEXT NOT NULL,
    source  TEXT NOT NULL,
    step    TEXT,
    message TEXT NOT NULL,
    status  TEXT,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE idempotency_keys (
    key        TEXT PRIMARY KEY,
    body_hash  TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX idempotency_by_expiry ON idempotency_keys (expires_at);

-- The hook outbox. Writers hold an advisory transaction lock while inserting, and readers
-- stop below the ids its holders may still commit (horizon.rs), so a reader never skips a
-- late-committing lower id.
CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    body        TEXT NOT NULL
);

CREATE TABLE event_cursors (
    target  TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL
);
