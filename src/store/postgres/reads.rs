//! The Postgres text of the statements written once in `store/` whose SQL differs between
//! databases: column casts, row locks, `ANY` over arrays.

use super::super::backend::{LeaseSql, RecordSql, TaskSql, TreeSql};

pub(super) const TASKS: TaskSql = TaskSql {
    task: concat!("SELECT ", task_columns!(), " FROM tasks t WHERE t.id = $1"),
    in_state: concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks t WHERE t.state = $1 \
         ORDER BY coalesce(t.started_at, t.run_at), t.seq LIMIT $2",
    ),
    promote_due: "WITH due AS ( \
             SELECT id FROM tasks WHERE state = 'scheduled' AND run_at <= $1 \
             ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         UPDATE tasks t SET state = 'pending' FROM due WHERE t.id = due.id",
    park_tree: "UPDATE tasks SET state = 'scheduled', \
             run_at = run_at + interval '8766000 hours' \
         WHERE (id = $1 OR (root_id = $1 AND parent_id IS NOT NULL)) AND state = 'pending'",
    unpark_tree: "UPDATE tasks SET run_at = run_at - interval '8766000 hours' \
         WHERE (id = $1 OR (root_id = $1 AND parent_id IS NOT NULL)) \
             AND state = 'scheduled' AND run_at >= $2",
    park_due: "UPDATE tasks SET state = 'scheduled', run_at = run_at + interval '8766000 hours' \
         WHERE state IN ('pending', 'scheduled') AND run_at <= $1 \
             AND root_id IN (SELECT root_id FROM paused_trees)",
};

pub(super) const TREES: TreeSql = TreeSql {
    read_for_update: "SELECT last_seq, reported, finished_at FROM task_trees WHERE root_id = $1 \
         FOR UPDATE",
    release_callbacks: "UPDATE tasks t SET state = 'pending', run_at = $2 \
         WHERE t.root_id = $1 AND t.state = 'waiting' \
           AND EXISTS (SELECT 1 FROM tasks p WHERE p.id = t.waits_for \
               AND p.state IN ('succeeded', 'failed', 'cancelled', 'expired')) \
           AND NOT EXISTS (SELECT 1 FROM tasks c WHERE c.parent_id = t.waits_for \
               AND c.id <> t.id \
               AND c.state IN ('pending', 'scheduled', 'leased', 'running', 'waiting'))",
    count_tasks: "SELECT state, count(*) AS count, \
             coalesce(sum(progress_done), 0)::bigint AS done, \
             coalesce(sum(progress_total), 0)::bigint AS total \
         FROM tasks WHERE root_id = $1 GROUP BY state",
    latest_message: "SELECT progress_message FROM tasks \
         WHERE root_id = $1 AND progress_message <> '' \
         ORDER BY progress_at DESC NULLS LAST LIMIT 1",
};

/// A page of records where `{column}` is the task or the root.
macro_rules! records_where {
    ($column:literal) => {
        concat!(
            "SELECT seq, root_id, task_id, kind, key, status, data::text AS data, created_at, \
                 updated_at \
             FROM task_records \
             WHERE ",
            $column,
            " = $1 AND seq > $2 \
               AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR status = $4) \
             ORDER BY seq LIMIT $5"
        )
    };
}

pub(super) const RECORDS: RecordSql = RecordSql {
    by_task: records_where!("task_id"),
    by_root: records_where!("root_id"),
    keys: "SELECT key FROM task_records WHERE root_id = $1 AND kind = $2 \
           AND ($3::text IS NULL OR status = $3) ORDER BY seq",
};

pub(super) const KNOWS_TASK_NAME: &str =
    "SELECT EXISTS (SELECT 1 FROM workers WHERE $1 = ANY(task_names)) AS known";

pub(super) const LEASES: LeaseSql = LeaseSql {
    // A row locked right now is being written (started, finished, released); it is renewed next
    // round, well within its TTL. Skipping never waits, so never deadlocks.
    renew: "WITH held AS ( \
             SELECT id FROM tasks \
             WHERE session_id = ANY($1::uuid[]) AND state IN ('leased', 'running') \
             FOR UPDATE SKIP LOCKED) \
         UPDATE tasks t SET lease_expires_at = LEAST( \
             $2::timestamptz + $3 * interval '1 millisecond', \
             COALESCE(t.started_at + (t.hard_time_limit_ms + $4) * interval '1 millisecond', \
                      'infinity')) \
         FROM held WHERE t.id = held.id",
    expire_session: "WITH held AS MATERIALIZED ( \
             SELECT id FROM tasks \
             WHERE session_id = $1 AND state IN ('leased', 'running') \
             ORDER BY id FOR UPDATE) \
         UPDATE tasks t SET lease_expires_at = LEAST(t.lease_expires_at, $2) \
         FROM held WHERE t.id = held.id AND t.session_id = $1",
    governed_candidates: "SELECT id, priority, seq, fair_position, expires_at, \
             rate_keys::text AS rate_keys, group_key, max_concurrency \
         FROM tasks \
         WHERE state = 'pending' AND governed AND queue = $1 AND name = $2 \
             AND NOT EXISTS (SELECT 1 FROM paused_queues WHERE queue = $1) \
         ORDER BY priority DESC, fair_position, seq LIMIT $3 \
         FOR UPDATE SKIP LOCKED",
    concurrency_lock: "SELECT pg_advisory_xact_lock(hashtextextended($1, 7)) IS NULL AS locked",
    fair_group_for_update: "SELECT finish FROM fair_groups WHERE queue = $1 AND group_key = $2 \
         FOR UPDATE",
    lock_root: "SELECT id, root_id, state FROM tasks WHERE id = $1 FOR UPDATE",
    lock_root_shared: "SELECT id FROM tasks WHERE id = $1 FOR KEY SHARE",
    bucket_for_update: "SELECT tokens, updated_at, factor, slowed_at FROM rate_buckets WHERE key = $1 FOR UPDATE",
    lease_one: "UPDATE tasks t SET state = 'leased', attempt = t.attempt + 1, worker_id = $2, \
             session_id = $3, leased_at = $4, lease_expires_at = $5 \
         WHERE t.id = $1 AND t.state = 'pending' \
         RETURNING t.id, t.attempt, t.name, t.queue, t.priority, t.args::text AS args, \
             t.retries, t.max_retries, t.soft_time_limit_ms, t.hard_time_limit_ms, t.expires_at, \
             t.parent_id, t.root_id, t.run_at",
    govern_matching: "UPDATE tasks SET governed = TRUE \
         WHERE NOT governed AND state IN ('pending', 'scheduled') \
             AND (('task:' || name) LIKE $1 ESCAPE '\\' \
                 OR EXISTS (SELECT 1 FROM jsonb_object_keys(rate_keys) AS key \
                     WHERE key LIKE $1 ESCAPE '\\'))",
};
