-- Queues an operator paused (`celeritas pause-queue`): no coordinator leases their tasks until
-- the row is deleted. Running tasks are not touched.
CREATE TABLE paused_queues (
    queue       text PRIMARY KEY,
    paused_at   timestamptz NOT NULL,
    paused_by   text
);
