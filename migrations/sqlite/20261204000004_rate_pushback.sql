-- As in the Postgres schema: the share of its rate a key runs at and when it was last slowed.
ALTER TABLE rate_buckets ADD COLUMN factor INTEGER NOT NULL DEFAULT 1000;
ALTER TABLE rate_buckets ADD COLUMN slowed_at INTEGER;
