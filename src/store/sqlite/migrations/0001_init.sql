-- Times are Unix milliseconds (UTC); JSON documents are TEXT.
CREATE TABLE workflows (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    latest_version INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX workflows_by_age ON workflows (created_at, id);

CREATE TABLE workflow_versions (
    workflow_id   TEXT NOT NULL,
    version       INTEGER NOT NULL,
    name          TEXT NOT NULL,
    definition    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT,
    restored_from INTEGER,
    PRIMARY KEY (workflow_id, version)
) STRICT, WITHOUT ROWID;

CREATE TABLE templates (
    name       TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT
) STRICT;

CREATE TABLE runs (
    id                TEXT PRIMARY KEY,
    workflow_id       TEXT NOT NULL,
    workflow_version  INTEGER NOT NULL,
    status            TEXT NOT NULL,
    current_step      INTEGER NOT NULL,
    context           TEXT NOT NULL,
    error             TEXT,
    usage             TEXT NOT NULL DEFAULT '{}',
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    rev               INTEGER NOT NULL DEFAULT 0,
    owner             TEXT,
    lease_expires_at  INTEGER,
    approval_deadline INTEGER,
    active_ms         INTEGER NOT NULL DEFAULT 0,
    log_seq           INTEGER NOT NULL DEFAULT 0,
    event_seq         INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX runs_by_workflow ON runs (workflow_id, id);
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_to_claim ON runs (id) WHERE status IN ('PENDING', 'RUNNING');
CREATE INDEX runs_by_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_by_approval_deadline ON runs (approval_deadline)
    WHERE approval_deadline IS NOT NULL;

CREATE TABLE step_runs (
    run_id      TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    step_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    action      TEXT NOT NULL,
    status      TEXT NOT NULL,
    error       TEXT,
    output      TEXT,
    http_code   INTEGER,
    attempts    TEXT NOT NULL DEFAULT '[]',
    started_at  INTEGER,
    finished_at INTEGER,
    waiting_since INTEGER,
    truncated   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, idx)
) STRICT, WITHOUT ROWID;

CREATE TABLE approvals (
    run_id   TEXT NOT NULL,
    n        INTEGER NOT NULL,
    step     TEXT NOT NULL,
    decision TEXT NOT NULL,
    by_name  TEXT NOT NULL,
    at       INTEGER NOT NULL,
    comment  TEXT,
    input    TEXT,
    PRIMARY KEY (run_id, n)
) STRICT, WITHOUT ROWID;

CREATE TABLE run_logs (
    run_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    ts      INTEGER NOT NULL,
    level   TEXT NOT NULL,
    source  TEXT NOT NULL,
    step    TEXT,
    message TEXT NOT NULL,
    status  TEXT,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    key        TEXT PRIMARY KEY,
    body_hash  TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX idempotency_by_expiry ON idempotency_keys (expires_at);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    body        TEXT NOT NULL
) STRICT;

CREATE TABLE event_cursors (
    target TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
) STRICT;
