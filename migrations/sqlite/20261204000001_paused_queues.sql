-- As in the Postgres schema: queues whose tasks are not leased until resumed. Moments are
-- microseconds.
CREATE TABLE paused_queues (
    queue       TEXT PRIMARY KEY,
    paused_at   INTEGER NOT NULL,
    paused_by   TEXT
);
