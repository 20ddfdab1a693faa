-- As in the Postgres schema: `governed`, group keys, concurrency limits, the fair order and
-- paused trees. Moments are microseconds.
ALTER TABLE tasks RENAME COLUMN rate_limited TO governed;

ALTER TABLE tasks ADD COLUMN group_key TEXT;
ALTER TABLE tasks ADD COLUMN max_concurrency INTEGER;
ALTER TABLE tasks ADD COLUMN fair_position INTEGER;

DROP INDEX tasks_pending_limited;
CREATE INDEX tasks_pending_governed ON tasks (queue, name, priority DESC, fair_position, seq)
    WHERE state = 'pending' AND governed;
CREATE INDEX tasks_active_by_group ON tasks (name, group_key)
    WHERE state IN ('leased', 'running') AND max_concurrency IS NOT NULL;

CREATE TABLE fair_groups (
    queue       TEXT NOT NULL,
    group_key   TEXT NOT NULL,
    finish      INTEGER NOT NULL,
    PRIMARY KEY (queue, group_key)
);

CREATE TABLE fair_clocks (
    queue       TEXT PRIMARY KEY,
    position    INTEGER NOT NULL
);

CREATE TABLE paused_trees (
    root_id     TEXT PRIMARY KEY,
    paused_at   INTEGER NOT NULL
);
