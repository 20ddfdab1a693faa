-- Files uploaded through the API (FileService), kept here so workers on any host read them.
-- A file is written chunk by chunk, each chunk in a short transaction of its own, and becomes
-- visible (to GetFile and Download) only when its upload completes and `complete` is set.
CREATE TABLE files (
    id                  UUID PRIMARY KEY,
    name                TEXT NOT NULL,
    content_type        TEXT NOT NULL,
    -- The size and digest are known once the upload completes.
    size                BIGINT NOT NULL DEFAULT 0,
    sha256              TEXT,
    complete            BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          TIMESTAMPTZ NOT NULL,
    completed_at        TIMESTAMPTZ
);

-- A file's bytes, in chunks keyed by where each starts; read by offset, a page at a time.
CREATE TABLE file_chunks (
    file_id             UUID NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    byte_offset         BIGINT NOT NULL,
    size                BIGINT NOT NULL,
    bytes               BYTEA NOT NULL,
    PRIMARY KEY (file_id, byte_offset)
);
