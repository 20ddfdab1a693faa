//! The SQLite text of the statements written once in `store/` whose SQL differs between
//! databases: no casts, no row locks (one connection serialises writers), JSON arrays.

use super::super::backend::{LeaseSql, RecordSql, TaskSql, TreeSql};

pub(super) const TASKS: TaskSql = TaskSql {
    task: "SELECT * FROM tasks WHERE id = $1",
    in_state: "SELECT * FROM tasks WHERE state = $1 ORDER BY coalesce(started_at, run_at), seq \
         LIMIT $2",
    promote_due: "UPDATE tasks SET state = 'pending' WHERE seq IN ( \
             SELECT seq FROM tasks WHERE state = 'scheduled' AND run_at <= $1 \
             ORDER BY run_at LIMIT $2)",
    park_tree: "UPDATE tasks SET state = 'scheduled', run_at = run_at + 31557600000000000 \
         WHERE (id = $1 OR (root_id = $1 AND parent_id IS NOT NULL)) AND state = 'pending'",
    unpark_tree: "UPDATE tasks SET run_at = run_at - 31557600000000000 \
         WHERE (id = $1 OR (root_id = $1 AND parent_id IS NOT NULL)) \
             AND state = 'scheduled' AND run_at >= $2",
    park_due: "UPDATE tasks SET state = 'scheduled', run_at = run_at + 31557600000000000 \
         WHERE state IN ('pending', 'scheduled') AND run_at <= $1 \
             AND root_id IN (SELECT root_id FROM paused_trees)",
};

pub(super) const TREES: TreeSql = TreeSql {
    read_for_update: "SELECT last_seq, reported, finished_at FROM task_trees WHERE root_id = $1",
    release_callbacks: "UPDATE tasks SET state = 'pending', run_at = $2 \
         WHERE root_id = $1 AND state = 'waiting' \
           AND EXISTS (SELECT 1 FROM tasks p WHERE p.id = tasks.waits_for \
               AND p.state IN ('succeeded', 'failed', 'cancelled', 'expired')) \
           AND NOT EXISTS (SELECT 1 FROM tasks c WHERE c.parent_id = tasks.waits_for \
               AND c.id <> tasks.id \
               AND c.state IN ('pending', 'scheduled', 'leased', 'running', 'waiting'))",
    count_tasks: "SELECT state, count(*) AS count, coalesce(sum(progress_done), 0) AS done, \
             coalesce(sum(progress_total), 0) AS total \
         FROM tasks WHERE root_id = $1 GROUP BY state",
    latest_message: "SELECT progress_message FROM tasks \
         WHERE root_id = $1 AND progress_message <> '' ORDER BY progress_at DESC LIMIT 1",
};

/// A page of records where `{column}` is the task or the root.
macro_rules! records_where {
    ($column:literal) => {
        concat!(
            "SELECT seq, root_id, task_id, kind, key, status, data, created_at, updated_at \
             FROM task_records WHERE ",
            $column,
            " = $1 AND seq > $2 \
               AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR status = $4) \
             ORDER BY seq LIMIT $5"
        )
    };
}

pub(super) const RECORDS: RecordSql = RecordSql {
    by_task: records_where!("task_id"),
    by_root: records_where!("root_id"),
    keys: "SELECT key FROM task_records WHERE root_id = $1 AND kind = $2 \
           AND ($3 IS NULL OR status = $3) ORDER BY seq",
};

pub(super) const KNOWS_TASK_NAME: &str = "SELECT EXISTS (SELECT 1 FROM workers, \
     json_each(workers.task_names) WHERE json_each.value = $1) AS known";

pub(super) const LEASES: LeaseSql = LeaseSql {
    renew: "UPDATE tasks SET lease_expires_at = min($2 + $3 * 1000, \
             CASE WHEN started_at IS NULL THEN 9223372036854775807 \
                  ELSE started_at + (hard_time_limit_ms + $4) * 1000 END) \
         WHERE session_id IN (SELECT value FROM json_each($1)) \
             AND state IN ('leased', 'running')",
    expire_session: "UPDATE tasks SET lease_expires_at = min(lease_expires_at, $2) \
         WHERE session_id = $1 AND state IN ('leased', 'running')",
    governed_candidates: "SELECT id, priority, seq, fair_position, expires_at, rate_keys, \
             group_key, max_concurrency FROM tasks \
         WHERE state = 'pending' AND governed AND queue = $1 AND name = $2 \
             AND NOT EXISTS (SELECT 1 FROM paused_queues WHERE queue = $1) \
         ORDER BY priority DESC, fair_position, seq LIMIT $3",
    concurrency_lock: "SELECT $1 IS NULL AS locked",
    fair_group_for_update: "SELECT finish FROM fair_groups WHERE queue = $1 AND group_key = $2",
    lock_root: "SELECT id, root_id, state FROM tasks WHERE id = $1",
    lock_root_shared: "SELECT id FROM tasks WHERE id = $1",
    bucket_for_update: "SELECT tokens, updated_at, factor, slowed_at FROM rate_buckets WHERE key = $1",
    lease_one: "UPDATE tasks SET state = 'leased', attempt = attempt + 1, worker_id = $2, \
             session_id = $3, leased_at = $4, lease_expires_at = $5 \
         WHERE id = $1 AND state = 'pending' \
         RETURNING id, attempt, name, queue, priority, args, retries, max_retries, \
             soft_time_limit_ms, hard_time_limit_ms, expires_at, parent_id, root_id, run_at",
    // LIKE is blind to ASCII case here: a task it governs beyond the pattern's keys costs
    // nothing more, as no limit covers them.
    govern_matching: "UPDATE tasks SET governed = TRUE \
         WHERE NOT governed AND state IN ('pending', 'scheduled') \
             AND (('task:' || name) LIKE $1 ESCAPE '\\' \
                 OR EXISTS (SELECT 1 FROM json_each(tasks.rate_keys) AS each_key \
                     WHERE each_key.key LIKE $1 ESCAPE '\\'))",
};
