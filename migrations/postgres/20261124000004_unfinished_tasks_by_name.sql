-- ListTasks by name among unfinished tasks (the campaign upkeep's "running batches quiet for a
-- while", every few minutes) without scanning every finished task. Queries name their states as
-- literals, so the planner can match this predicate.
CREATE INDEX tasks_unfinished_by_name ON tasks (name, state)
    WHERE state IN ('pending', 'scheduled', 'leased', 'running', 'waiting');
