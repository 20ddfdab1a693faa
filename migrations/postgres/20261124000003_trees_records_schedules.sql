-- Callbacks wait for their parent's children in the new 'waiting' state.
ALTER TABLE tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check CHECK (state IN (
    'pending', 'scheduled', 'leased', 'running',
    'succeeded', 'failed', 'cancelled', 'expired', 'waiting'));
-- For a callback: the parent whose children it waits for.
ALTER TABLE tasks ADD COLUMN waits_for uuid;
-- The latest progress the task reported.
ALTER TABLE tasks ADD COLUMN progress_done bigint;
ALTER TABLE tasks ADD COLUMN progress_total bigint;
ALTER TABLE tasks ADD COLUMN progress_message text;
ALTER TABLE tasks ADD COLUMN progress_at timestamptz;

CREATE INDEX tasks_by_root ON tasks (root_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_by_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_waiting_for ON tasks (waits_for) WHERE state = 'waiting';

-- A tree: a root task that has children, progress or records. Plain tasks have none.
CREATE TABLE task_trees (
    root_id         uuid PRIMARY KEY,
    -- The last event's sequence number.
    last_seq        bigint NOT NULL,
    -- What the last event reported, to compare against (JSON, see store/encoding.rs).
    reported        jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz
);
CREATE INDEX task_trees_unfinished ON task_trees (created_at) WHERE finished_at IS NULL;

-- The events of a tree, numbered per root.
CREATE TABLE task_events (
    root_id         uuid NOT NULL,
    seq             bigint NOT NULL,
    at              timestamptz NOT NULL,
    -- The event (JSON, see store/encoding.rs) and the tree's aggregate as of it.
    event           jsonb NOT NULL,
    aggregate       jsonb NOT NULL,
    PRIMARY KEY (root_id, seq)
);

-- Per-item records tasks emit; a key is unique per root and kind.
CREATE TABLE task_records (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    root_id         uuid NOT NULL,
    task_id         uuid NOT NULL,
    kind            text NOT NULL,
    key             text NOT NULL,
    status          text NOT NULL,
    data            jsonb,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    UNIQUE (root_id, kind, key)
);
CREATE INDEX task_records_by_root ON task_records (root_id, seq);
CREATE INDEX task_records_by_task ON task_records (task_id, seq);

-- Periodic schedules (beat).
CREATE TABLE schedules (
    name            text PRIMARY KEY,
    -- The task each tick submits (a TaskSpec as JSON, see store/encoding.rs).
    task            jsonb NOT NULL,
    every_ms        bigint,
    cron            text,
    timezone        text NOT NULL DEFAULT 'UTC',
    paused          boolean NOT NULL DEFAULT false,
    next_run_at     timestamptz NOT NULL,
    last_run_at     timestamptz,
    last_task_id    uuid,
    -- Where the definition came from: 'config' or 'api'.
    source          text NOT NULL,
    CHECK ((every_ms IS NULL) <> (cron IS NULL))
);

-- What workers report with their heartbeats.
ALTER TABLE workers ADD COLUMN stats jsonb;
ALTER TABLE workers ADD COLUMN last_seen_at timestamptz;

-- Settings of this database; the page token secret signs ListRecords page tokens.
CREATE TABLE settings (
    key             text PRIMARY KEY,
    value           text NOT NULL
);
INSERT INTO settings (key, value)
    VALUES ('page_token_secret', gen_random_uuid()::text || gen_random_uuid()::text);
