-- The embedded store's schema: the Postgres schema in SQLite's terms. Moments are microseconds
-- since the Unix epoch; JSON is text; ids are hyphenated UUID text.
CREATE TABLE tasks (
    -- Submission order, for FIFO within a priority.
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT NOT NULL UNIQUE,
    name                TEXT NOT NULL,
    queue               TEXT NOT NULL,
    priority            INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 255),
    state               TEXT NOT NULL CHECK (state IN (
                            'pending', 'scheduled', 'leased', 'running',
                            'succeeded', 'failed', 'cancelled', 'expired', 'waiting')),
    args                TEXT NOT NULL,
    result              TEXT,
    error_kind          TEXT,
    error_message       TEXT,
    attempt             INTEGER NOT NULL DEFAULT 0,
    retries             INTEGER NOT NULL DEFAULT 0,
    max_retries         INTEGER NOT NULL,
    soft_time_limit_ms  INTEGER NOT NULL,
    hard_time_limit_ms  INTEGER NOT NULL,
    idempotency_key     TEXT,
    parent_id           TEXT,
    root_id             TEXT NOT NULL,
    worker_id           TEXT,
    session_id          TEXT,
    created_at          INTEGER NOT NULL,
    run_at              INTEGER NOT NULL,
    expires_at          INTEGER,
    leased_at           INTEGER,
    lease_expires_at    INTEGER,
    started_at          INTEGER,
    finished_at         INTEGER,
    failures            TEXT NOT NULL DEFAULT '[]',
    waits_for           TEXT,
    progress_done       INTEGER,
    progress_total      INTEGER,
    progress_message    TEXT,
    progress_at         INTEGER
);

CREATE INDEX tasks_pending_by_queue ON tasks (queue, priority DESC, seq) WHERE state = 'pending';
CREATE INDEX tasks_scheduled_by_run_at ON tasks (run_at) WHERE state = 'scheduled';
CREATE INDEX tasks_leased_by_worker ON tasks (worker_id) WHERE state IN ('leased', 'running');
CREATE INDEX tasks_leased_by_session ON tasks (session_id) WHERE state IN ('leased', 'running');
CREATE INDEX tasks_leased_by_expiry ON tasks (lease_expires_at) WHERE state IN ('leased', 'running');
CREATE INDEX tasks_waiting_by_expiry ON tasks (expires_at)
    WHERE state IN ('pending', 'scheduled') AND expires_at IS NOT NULL;
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE INDEX tasks_by_root ON tasks (root_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_by_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_waiting_for ON tasks (waits_for) WHERE state = 'waiting';

CREATE TABLE task_trees (
    root_id             TEXT PRIMARY KEY,
    last_seq            INTEGER NOT NULL,
    reported            TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    finished_at         INTEGER
);
CREATE INDEX task_trees_unfinished ON task_trees (created_at) WHERE finished_at IS NULL;

CREATE TABLE task_events (
    root_id             TEXT NOT NULL,
    seq                 INTEGER NOT NULL,
    at                  INTEGER NOT NULL,
    event               TEXT NOT NULL,
    aggregate           TEXT NOT NULL,
    PRIMARY KEY (root_id, seq)
);

CREATE TABLE task_records (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    root_id             TEXT NOT NULL,
    task_id             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    key                 TEXT NOT NULL,
    status              TEXT NOT NULL,
    data                TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    UNIQUE (root_id, kind, key)
);
CREATE INDEX task_records_by_root ON task_records (root_id, seq);
CREATE INDEX task_records_by_task ON task_records (task_id, seq);

CREATE TABLE schedules (
    name                TEXT PRIMARY KEY,
    task                TEXT NOT NULL,
    every_ms            INTEGER,
    cron                TEXT,
    timezone            TEXT NOT NULL DEFAULT 'UTC',
    paused              INTEGER NOT NULL DEFAULT 0,
    next_run_at         INTEGER NOT NULL,
    last_run_at         INTEGER,
    last_task_id        TEXT,
    source              TEXT NOT NULL,
    CHECK ((every_ms IS NULL) <> (cron IS NULL))
);

CREATE TABLE settings (
    key                 TEXT PRIMARY KEY,
    value               TEXT NOT NULL
);
INSERT INTO settings (key, value) VALUES ('page_token_secret', lower(hex(randomblob(32))));

CREATE TABLE workers (
    id                  TEXT PRIMARY KEY,
    hostname            TEXT NOT NULL,
    pid                 INTEGER NOT NULL,
    -- JSON arrays of names.
    queues              TEXT NOT NULL,
    task_names          TEXT NOT NULL,
    concurrency         INTEGER NOT NULL,
    prefetch_multiplier INTEGER NOT NULL,
    version             TEXT NOT NULL,
    coordinator_id      TEXT NOT NULL,
    connected_at        INTEGER NOT NULL,
    stats               TEXT,
    last_seen_at        INTEGER
);
