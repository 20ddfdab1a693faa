-- Files uploaded through the API (FileService), as in the Postgres schema: written chunk by
-- chunk, visible only once `complete` is set. Ids are UUID text, moments microseconds.
CREATE TABLE files (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    content_type        TEXT NOT NULL,
    size                INTEGER NOT NULL DEFAULT 0,
    sha256              TEXT,
    complete            INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    completed_at        INTEGER
);

CREATE TABLE file_chunks (
    file_id             TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    byte_offset         INTEGER NOT NULL,
    size                INTEGER NOT NULL,
    bytes               BLOB NOT NULL,
    PRIMARY KEY (file_id, byte_offset)
);
