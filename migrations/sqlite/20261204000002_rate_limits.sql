-- As in the Postgres schema: rate keys (JSON text), whether a limit covered them at submission,
-- the claim's two indexes, and the token buckets. Moments are microseconds.
ALTER TABLE tasks ADD COLUMN rate_keys TEXT;
ALTER TABLE tasks ADD COLUMN rate_limited INTEGER NOT NULL DEFAULT 0;

CREATE INDEX tasks_pending_unlimited ON tasks (queue, name, priority DESC, seq)
    WHERE state = 'pending' AND NOT rate_limited;
CREATE INDEX tasks_pending_limited ON tasks (queue, name, priority DESC, seq)
    WHERE state = 'pending' AND rate_limited;
DROP INDEX tasks_pending_by_queue_and_name;

CREATE TABLE rate_buckets (
    key         TEXT PRIMARY KEY,
    tokens      INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
