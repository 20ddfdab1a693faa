// The client's public types: plain objects, not protobuf messages. Conventions:
// - JSON travels as values: `args`, `result` and a record's `data` are parsed for you.
// - Every duration is a number of milliseconds; every moment is a `Date`.
// - Absent values are `undefined`, never empty strings.

/** Where a task is in its life; the names are the server's (`tasks_by_state` keys). */
export type TaskState =
  | "pending"
  | "scheduled"
  | "leased"
  | "running"
  | "succeeded"
  | "failed"
  | "cancelled"
  | "expired"
  | "waiting"
  | "unknown";

/** The states a task ends in; it never leaves one. */
export const terminalStates: ReadonlySet<TaskState> = new Set<TaskState>(["succeeded", "failed", "cancelled", "expired"]);

/** What to run, besides the task's name and arguments. Every field is optional. */
export interface SubmitOptions {
  /** The queue; when absent the coordinator's routes decide. */
  queue?: string;
  /** Priority within the queue, 0 to 255; higher runs first. */
  priority?: number;
  /** Run no earlier than this many milliseconds from now. Exclusive with `eta`. */
  countdown?: number;
  /** Run no earlier than this moment. Exclusive with `countdown`. */
  eta?: Date;
  /** Never run if not started by this moment. Exclusive with `expiresIn`. */
  expiresAt?: Date;
  /** Never run if not started within this many milliseconds. */
  expiresIn?: number;
  /** How many failed attempts may be retried, 0 to 1000; default: the task's configured policy. */
  maxRetries?: number;
  /**
   * A second submission with the same key returns the first task and creates nothing. When absent
   * the client makes one up (a UUID), so that its own retries cannot create a task twice.
   */
  idempotencyKey?: string;
  /** When the running task is asked to stop, in milliseconds. */
  softTimeLimit?: number;
  /** When the running task is aborted, in milliseconds; not shorter than the soft limit. */
  hardTimeLimit?: number;
  /** The task that submits this one; the new task joins its tree. */
  parentId?: string;
  /**
   * Rate keys (`"customer:42"`, `"domain:gmail.com"`) and what a run costs each (0 means 1). A
   * key that a `[rate_limits]` pattern of the coordinator's configuration covers is leased no
   * faster than that limit, cluster-wide. Keys with `*`, empty or over 200 bytes, more than 64
   * keys or a cost over 1,000,000 throw `InvalidArgumentError` naming `rate_keys`.
   */
  rateKeys?: Record<string, number>;
  /**
   * Its fairness group (a tenant, a campaign), up to 200 bytes; its children inherit it. Within
   * a queue and priority, leases go round the groups with work waiting, so a small campaign
   * submitted after a large one is not stuck behind it.
   */
  groupKey?: string;
  /**
   * At most this many tasks of its name and group (of its name, without a group) are leased or
   * running at once, cluster-wide: 1 to 100,000. Out of range throws `InvalidArgumentError`
   * naming `max_concurrency`.
   */
  maxConcurrency?: number;
}

/**
 * Which tasks `retryTasks` and `cancelTasks` act on: every criterion given must match, and at
 * least one must be given (an empty selector throws `InvalidArgumentError` naming `selector`).
 */
export interface TaskSelector {
  /** Only tasks with one of these names. */
  names?: string[];
  /** Only tasks on one of these queues. */
  queues?: string[];
  /** Only tasks of this tree (the root and its descendants). */
  rootId?: string;
  /**
   * Only tasks in one of these states. `retryTasks` takes `"failed"` only (and failed tasks
   * when absent); `cancelTasks` unfinished states only (all of them when absent).
   */
  states?: TaskState[];
  /** Only tasks whose last failure is of one of these kinds (`Task.error.kind`). */
  errorKinds?: string[];
  /** Only tasks submitted at or after this moment. */
  createdAfter?: Date;
  /** Only tasks submitted before this moment. */
  createdBefore?: Date;
  /** Only tasks that finished at or after this moment. */
  finishedAfter?: Date;
  /** Only tasks that finished before this moment. */
  finishedBefore?: Date;
}

/** What a bulk `retryTasks` or `cancelTasks` did. */
export interface BulkResult {
  /** How many tasks matched the selector when the call began. */
  matched: number;
  /**
   * How many of them were retried / cancelled; 0 for a dry run. A task that finished meanwhile
   * is matched but not changed; descendants cancelled along with a matched task are not counted.
   */
  changed: number;
}

/** One task of a batch for `submitMany`. */
export interface TaskSubmission extends SubmitOptions {
  /** The task's registered name. */
  name: string;
  /** Its arguments, any JSON value; default `{}`. */
  args?: unknown;
}

/** The outcome of one submission. */
export interface Submitted {
  /** The task's id: new, or the existing task's for a repeated idempotency key. */
  taskId: string;
  /** False when the idempotency key matched an existing task and nothing was created. */
  created: boolean;
}

/** Why an attempt failed. */
export interface TaskError {
  /** A short machine-readable kind, such as "time_limit" or "worker_lost". */
  kind: string;
  /** A human-readable message. */
  message: string;
}

/** One failed attempt of a task. */
export interface AttemptFailure {
  /** The attempt (lease number) that failed. */
  attempt: number;
  /** The worker it ran on. */
  workerId?: string;
  /** What the task reported, or "worker_lost" / "time_limit". */
  kind: string;
  /** The failure's message. */
  message: string;
  /** When it was recorded. */
  at?: Date;
}

/** Everything the coordinator knows about one task. */
export interface Task {
  id: string;
  name: string;
  queue: string;
  priority: number;
  state: TaskState;
  /** Whether the state is terminal (succeeded, failed, cancelled or expired). */
  finished: boolean;
  /** The arguments, as submitted. */
  args: unknown;
  /** The result, once succeeded. */
  result?: unknown;
  /** The error of the last failed attempt. */
  error?: TaskError;
  /** How many leases it has had. */
  attempt: number;
  /** How many failed attempts were retried. */
  retries: number;
  /** How many retries it may have. */
  maxRetries: number;
  createdAt?: Date;
  /** The earliest moment it may run (its ETA, or the end of a retry's backoff). */
  runAt?: Date;
  startedAt?: Date;
  finishedAt?: Date;
  expiresAt?: Date;
  /** The worker holding or last holding its lease. */
  workerId?: string;
  /** The task that submitted it. */
  parentId?: string;
  /** The root of its tree; its own id when it has no parent. */
  rootId: string;
  idempotencyKey?: string;
  /** Every failed attempt, oldest first. */
  failures: AttemptFailure[];
  /** The last progress it reported; undefined when it has reported none. */
  progress?: Progress;
  /** Its rate keys and costs, `task:<name>` included when its name has a limit. */
  rateKeys: Record<string, number>;
  /** Its fairness group, if any. */
  groupKey?: string;
  /** Its concurrency limit, if any. */
  maxConcurrency?: number;
  /** When its tree was paused (`pauseTree`), while it is. */
  treePausedAt?: Date;
}

/** What `pauseTree` did. */
export interface TreePause {
  /** False when the tree was paused already. */
  changed: boolean;
  /** Since when it is paused. */
  pausedAt?: Date;
  /** Running tasks asked to stop and wait (a campaign batch stops after its current message). */
  stopping: number;
}

/** Done and total units of work. */
export interface Progress {
  done: number;
  /** 0 when unknown. */
  total: number;
  message: string;
}

/** A task tree as of one event, so a progress bar needs no arithmetic. */
export interface Aggregate {
  /** Tasks in the tree, root included. */
  tasksTotal: number;
  /** Tasks of the tree in a terminal state. */
  tasksFinished: number;
  /** Tasks by state name ("pending", "running", ...). */
  tasksByState: Record<string, number>;
  /** Records by status ("delivered", "failed", ...). */
  recordsByStatus: Record<string, number>;
  /** The sum of the progress reported by the tree's tasks. */
  progress: Progress;
}

/** What one progress event says happened. */
export type ProgressChange =
  | {
      /** The root task changed state. */
      type: "stateChanged";
      taskId: string;
      state: TaskState;
      /** The error, for a failure. */
      error?: TaskError;
    }
  | {
      /** The root task reported progress. */
      type: "progressUpdated";
      taskId: string;
      progress: Progress;
    }
  | {
      /** The tree changed since the previous event (throttled to a few a second). */
      type: "treeUpdated";
      tasksSubmitted: number;
      tasksFinished: number;
      recordsAdded: number;
      /** The latest progress message reported in the tree, if any. */
      message: string;
    }
  | {
      /** Every task of the tree has finished; the last event of a stream. */
      type: "treeFinished";
      rootState: TaskState;
    }
  | {
      /** An event this client does not know (a newer server). */
      type: "unknown";
    };

/** One event of a task tree. */
export interface ProgressEvent {
  /** Increases by one with each event of the tree; resume after it with `fromSequence`. */
  sequence: number;
  /** The root task of the tree. */
  rootId: string;
  /** When it happened. */
  at?: Date;
  /** What happened. */
  change: ProgressChange;
  /** The tree as of this event. */
  aggregate: Aggregate;
}

/** One durable per-item record a task emitted. */
export interface TaskRecord {
  /** The task that emitted it (the last one to write it). */
  taskId: string;
  /** The root of that task's tree. */
  rootId: string;
  /** What sort of record, such as "delivery". */
  kind: string;
  /** Which item, unique per root and kind. */
  key: string;
  /** Its status, such as "delivered". */
  status: string;
  /** Anything else, parsed from JSON; undefined when the task gave none. */
  data?: unknown;
  createdAt?: Date;
  updatedAt?: Date;
}

/** Which records to list. */
export interface ListRecordsOptions {
  /** The whole tree's records (the task must be a root) instead of the task's own. */
  wholeTree?: boolean;
  /** Only records of this kind. */
  kind?: string;
  /** Only records with this status. */
  status?: string;
  /** Records per page, 1 to 10,000; default 1,000 (the server's). */
  pageSize?: number;
}

/** A page of records. */
export interface RecordPage {
  records: TaskRecord[];
  /** Pass as `pageToken` for the next page; undefined on the last page. */
  nextPageToken?: string;
}

/** The standard gRPC health states. */
export type HealthStatus = "SERVING" | "NOT_SERVING" | "UNKNOWN" | "SERVICE_UNKNOWN";
