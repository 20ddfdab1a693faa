-- A worker is leased only the tasks whose names it registered, so claims look up pending tasks
-- by queue and name: one index probe per (queue, name) pair, each already in service order. A
-- backlog of tasks no connected worker knows then costs a claim nothing (the queue-only index
-- made every claim walk past them). The queue-only index had no other reader that the new
-- index's leading column does not serve.
CREATE INDEX tasks_pending_by_queue_and_name ON tasks (queue, name, priority DESC, seq)
    WHERE state = 'pending';
DROP INDEX tasks_pending_by_queue;
