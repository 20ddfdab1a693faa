-- Rate limits enforced where leases are granted. A task's rate keys and costs (a JSON object,
-- NULL for none), and whether any configured limit covered one of them when it was submitted:
-- only those take the rate-limited claim, through an index of their own, so the claim of
-- work without limits reads exactly what it read before.
ALTER TABLE tasks ADD COLUMN rate_keys jsonb;
ALTER TABLE tasks ADD COLUMN rate_limited boolean NOT NULL DEFAULT false;

CREATE INDEX tasks_pending_unlimited ON tasks (queue, name, priority DESC, seq)
    WHERE state = 'pending' AND NOT rate_limited;
CREATE INDEX tasks_pending_limited ON tasks (queue, name, priority DESC, seq)
    WHERE state = 'pending' AND rate_limited;
DROP INDEX tasks_pending_by_queue_and_name;

-- One token bucket per limited key, shared by every coordinator: `tokens` (in thousandths of a
-- token) as of `updated_at`, negative after a lease that cost more than was left, refilled at
-- the key's rate when read.
CREATE TABLE rate_buckets (
    key         text PRIMARY KEY,
    tokens      bigint NOT NULL,
    updated_at  timestamptz NOT NULL
);
