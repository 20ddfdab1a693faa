-- Every failed attempt, oldest first: [{attempt, worker_id, kind, message, at}, ...].
ALTER TABLE tasks ADD COLUMN failures jsonb NOT NULL DEFAULT '[]';

-- Tasks that may expire before they start, for the sweeper.
CREATE INDEX tasks_waiting_by_expiry ON tasks (expires_at)
    WHERE state IN ('pending', 'scheduled') AND expires_at IS NOT NULL;

-- Leases by the stream holding them, for renewal and the grace period.
CREATE INDEX tasks_leased_by_session ON tasks (session_id) WHERE state IN ('leased', 'running');
