-- API tokens made with `celeritas tokens create`: only their SHA-256 is kept. A revoked token
-- stays listed (revoked_at set) and stops working on every coordinator at its next refresh.
CREATE TABLE api_tokens (
    name        text PRIMARY KEY,
    roles       text NOT NULL,
    sha256      text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

-- The credential (a client certificate's name, or a token's) a worker id was first presented
-- with: a stream with the same id and another credential is refused.
CREATE TABLE worker_credentials (
    worker_id   text PRIMARY KEY,
    credential  text NOT NULL,
    bound_at    timestamptz NOT NULL
);
