-- Task queues (DESIGN §8). A task is one step handed to workers; `attempt` is the number
-- of the claim it is on. `token` is the SHA-256 of the current claim's token. A claim
-- that ended (COMPLETED, FAILED, EXPIRED) stays `settled = false` until its run applied it.
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    queue            TEXT NOT NULL,
    run_id           TEXT NOT NULL,
    workflow_id      TEXT NOT NULL,
    step             TEXT NOT NULL,
    attempt          BIGINT NOT NULL,
    status           TEXT NOT NULL,
    payload          TEXT NOT NULL,
    heartbeat_ms     BIGINT NOT NULL,
    timeout_ms       BIGINT,
    created_at       BIGINT NOT NULL,
    available_at     BIGINT NOT NULL,
    worker           TEXT,
    token            BYTEA,
    claimed_at       BIGINT,
    lease_expires_at BIGINT,
    progress         TEXT,
    ended_at         BIGINT,
    output           TEXT,
    error            TEXT,
    retryable        BOOLEAN NOT NULL DEFAULT TRUE,
    settled          BOOLEAN NOT NULL DEFAULT TRUE
);
-- Claims read the head of each queue; listings count what is waiting or in flight.
CREATE INDEX tasks_waiting ON tasks (queue, available_at, id) WHERE status = 'WAITING';
CREATE INDEX tasks_claimed ON tasks (lease_expires_at) WHERE status = 'CLAIMED';
CREATE INDEX tasks_in_flight ON tasks (queue, worker) WHERE status = 'CLAIMED';
CREATE INDEX tasks_unsettled ON tasks (ended_at) WHERE NOT settled;
CREATE INDEX tasks_by_run ON tasks (run_id);

-- Workers seen polling: `queues` is a JSON array of names.
CREATE TABLE task_workers (
    name      TEXT PRIMARY KEY,
    queues    TEXT NOT NULL,
    last_seen BIGINT NOT NULL
);
CREATE INDEX task_workers_by_time ON task_workers (last_seen);

-- Every queue a task was ever put on (a queue exists once used).
CREATE TABLE task_queues (
    name       TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
