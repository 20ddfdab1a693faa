-- As in the Postgres schema: rate limits set through the API. Moments are microseconds.
CREATE TABLE rate_limit_settings (
    pattern     TEXT PRIMARY KEY,
    rate        TEXT NOT NULL,
    set_at      INTEGER NOT NULL,
    set_by      TEXT
);
