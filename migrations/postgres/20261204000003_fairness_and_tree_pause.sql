-- Fairness, concurrency keys and paused trees. Every task that needs more than the plain claim
-- (a configured rate limit covers one of its keys, it carries a group key or a concurrency
-- limit, or its tree was paused) is `governed`: the governed claim leases it, through an index
-- of its own, so the plain claim reads exactly what it read before.
ALTER TABLE tasks RENAME COLUMN rate_limited TO governed;

-- A task's fairness group (a tenant, a campaign; a child inherits its parent's), its limit on
-- how many tasks of its name and group run at once, and its place in its queue's fair order:
-- start-time fair queuing, a group's next task starting where its previous one ended or where
-- the queue's service has reached, whichever is later.
ALTER TABLE tasks ADD COLUMN group_key text;
ALTER TABLE tasks ADD COLUMN max_concurrency integer;
ALTER TABLE tasks ADD COLUMN fair_position bigint;

DROP INDEX tasks_pending_limited;
CREATE INDEX tasks_pending_governed ON tasks (queue, name, priority DESC, fair_position, seq)
    WHERE state = 'pending' AND governed;
-- The running tasks a concurrency limit counts.
CREATE INDEX tasks_active_by_group ON tasks (name, group_key)
    WHERE state IN ('leased', 'running') AND max_concurrency IS NOT NULL;

-- Where each group's last task ends in its queue's fair order.
CREATE TABLE fair_groups (
    queue       text NOT NULL,
    group_key   text NOT NULL,
    finish      bigint NOT NULL,
    PRIMARY KEY (queue, group_key)
);

-- How far each queue's governed service has reached in the fair order.
CREATE TABLE fair_clocks (
    queue       text PRIMARY KEY,
    position    bigint NOT NULL
);

-- Trees whose unstarted tasks are held: the governed claim passes over their tasks.
CREATE TABLE paused_trees (
    root_id     uuid PRIMARY KEY,
    paused_at   timestamptz NOT NULL
);
