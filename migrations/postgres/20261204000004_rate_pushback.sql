-- Adaptive rate limits: the share of its configured rate a key runs at (thousandths; halved on
-- pushback such as an SMTP 421, down to 1/64) as of `slowed_at`, from which it climbs back.
ALTER TABLE rate_buckets ADD COLUMN factor bigint NOT NULL DEFAULT 1000;
ALTER TABLE rate_buckets ADD COLUMN slowed_at timestamptz;
