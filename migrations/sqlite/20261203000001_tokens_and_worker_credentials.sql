-- As in the Postgres schema: API tokens by their SHA-256, and the credential each worker id is
-- bound to. Moments are microseconds.
CREATE TABLE api_tokens (
    name        TEXT PRIMARY KEY,
    roles       TEXT NOT NULL,
    sha256      TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE worker_credentials (
    worker_id   TEXT PRIMARY KEY,
    credential  TEXT NOT NULL,
    bound_at    INTEGER NOT NULL
);
