-- Tasks: one row per task for its whole life. Nothing is deleted when a task fails.
CREATE TABLE tasks (
    id                  uuid PRIMARY KEY,
    -- Submission order, for FIFO within a priority.
    seq                 bigint GENERATED ALWAYS AS IDENTITY,
    name                text NOT NULL,
    queue               text NOT NULL,
    priority            smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 255),
    state               text NOT NULL CHECK (state IN (
                            'pending', 'scheduled', 'leased', 'running',
                            'succeeded', 'failed', 'cancelled', 'expired')),
    args                jsonb NOT NULL,
    result              jsonb,
    error_kind          text,
    error_message       text,
    -- The lease number: every lease increments it, and the lease token is (id, attempt).
    attempt             integer NOT NULL DEFAULT 0,
    retries             integer NOT NULL DEFAULT 0,
    max_retries         integer NOT NULL,
    soft_time_limit_ms  bigint NOT NULL,
    hard_time_limit_ms  bigint NOT NULL,
    idempotency_key     text,
    parent_id           uuid,
    root_id             uuid NOT NULL,
    -- The worker holding the lease, or the last one that held it.
    worker_id           text,
    -- The worker's stream the lease is held through; a replaced stream may not release it.
    session_id          uuid,
    created_at          timestamptz NOT NULL,
    -- The earliest moment the task may run: its ETA, or the end of a retry's backoff.
    run_at              timestamptz NOT NULL,
    expires_at          timestamptz,
    leased_at           timestamptz,
    lease_expires_at    timestamptz,
    started_at          timestamptz,
    finished_at         timestamptz
);

-- The claim reads this index: per queue, highest priority first, then oldest.
CREATE INDEX tasks_pending_by_queue ON tasks (queue, priority DESC, seq) WHERE state = 'pending';
-- Promotion of due ETA tasks and retries.
CREATE INDEX tasks_scheduled_by_run_at ON tasks (run_at) WHERE state = 'scheduled';
-- Leases by holder, and by expiry for the reaper.
CREATE INDEX tasks_leased_by_worker ON tasks (worker_id) WHERE state IN ('leased', 'running');
CREATE INDEX tasks_leased_by_expiry ON tasks (lease_expires_at) WHERE state IN ('leased', 'running');
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Workers, as their last hello described them.
CREATE TABLE workers (
    id                  text PRIMARY KEY,
    hostname            text NOT NULL,
    pid                 integer NOT NULL,
    queues              text[] NOT NULL,
    task_names          text[] NOT NULL,
    concurrency         integer NOT NULL,
    prefetch_multiplier integer NOT NULL,
    version             text NOT NULL,
    coordinator_id      text NOT NULL,
    connected_at        timestamptz NOT NULL
);
