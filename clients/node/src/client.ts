// `Client`: every TaskService operation, inspection, schedules and health, over one gRPC channel.

import type {
  CallOptions,
  ChannelCredentials,
  ChannelOptions,
  ClientUnaryCall,
  Interceptor,
  Metadata,
  ServiceError,
} from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { inspect } from "node:util";
import { CallContext, endpointFromUrl, resolveTls, resolveToken, type TlsOptions, type UnaryMethod } from "./connection";
import {
  durationToPb,
  recordFromPb,
  submissionToPb,
  taskFromPb,
  taskSelectorToPb,
  taskSpecToPb,
  taskStateToPb,
} from "./convert";
import { upload, type StoredFile, type UploadOptions } from "./files";
import { FileServiceClient } from "./generated/celeritas/v1/files";
import { InspectServiceClient } from "./generated/celeritas/v1/inspect";
import { ScheduleServiceClient } from "./generated/celeritas/v1/schedules";
import { TaskServiceClient } from "./generated/celeritas/v1/tasks";
import { HealthCheckResponse_ServingStatus, HealthClient } from "./generated/grpc/health/v1/health";
import { Inspector } from "./inspect";
import { errorForStatus } from "./errors";
import { followProgress, type StreamProgressOptions } from "./progress";
import { defaultRetryOptions, type RetryOptions } from "./retry";
import { Schedules } from "./schedules";
import type {
  BulkResult,
  HealthStatus,
  ListRecordsOptions,
  ProgressEvent,
  RecordPage,
  SubmitOptions,
  Submitted,
  Task,
  TaskRecord,
  TaskSelector,
  TaskState,
  TaskSubmission,
  TreePause,
} from "./types";

/** How a `Client` connects and behaves. Every field is optional. */
export interface ClientOptions {
  /**
   * Sent with every call as `authorization: Bearer <token>`. Default: `CELERITAS_TOKEN` when set;
   * `null` sends none whatever the environment says. Never shown in messages or by `util.inspect`.
   */
  token?: string | null;
  /**
   * TLS for an `https://` URL, as PEM text: `ca` (the roots to trust instead of the system's),
   * `cert` and `key` (a client certificate). Default: the files named by `CELERITAS_TLS_CA`,
   * `CELERITAS_TLS_CERT` and `CELERITAS_TLS_KEY`; `{}` ignores them. With an `http://` (or bare
   * `host:port`) URL, any of them throws a `TypeError` naming it instead of connecting in plain text.
   */
  tls?: TlsOptions;
  /** Retries on UNAVAILABLE; see `RetryOptions` for the defaults. */
  retry?: Partial<RetryOptions>;
  /** The deadline of one try of a unary call, in milliseconds (a `get` with `wait` gets the wait on top). Default 30,000. */
  timeoutMs?: number;
  /**
   * Replaces the credentials the URL and `tls` imply (plain text for http://, TLS for https://);
   * the `CELERITAS_TLS_*` variables are then not read. Not together with `tls`.
   */
  credentials?: ChannelCredentials;
  /** grpc-js channel options, merged over the client's (which raise the receive limit to 64 MiB). */
  channelOptions?: ChannelOptions;
  /** grpc-js client interceptors, run on every call. */
  interceptors?: Interceptor[];
}

/** How to read a task. */
export interface GetOptions {
  /**
   * Wait up to this many milliseconds for the task to finish before answering; the answer is the
   * task as it is then, finished or not. Waits longer than the server's 60 s are made of several
   * long polls.
   */
  wait?: number;
  /**
   * Wait for the task's whole tree instead: the task, every descendant and every callback, by
   * following the tree's progress stream to its `treeFinished` event, then answer the task (the
   * root). A task that fans out (`send_campaign`, `fan_out`) finishes as soon as it has submitted
   * its children, so without `tree` a wait ends long before its work is done. `wait` bounds
   * it (no bound without one); when it runs out first the call throws `DeadlineExceededError`.
   * The task must be a root (a child throws `FailedPreconditionError` naming its root).
   */
  tree?: boolean;
}

/** How to cancel a task. */
export interface CancelOptions {
  /** Abort a running task at once instead of asking it to stop. */
  terminate?: boolean;
}

/** How to retry tasks in bulk. */
export interface RetryTasksOptions {
  /** Only count the tasks that match; change nothing (and answer 0 matched rather than throw `NotFoundError`). */
  dryRun?: boolean;
}

/** How to cancel tasks in bulk. */
export interface CancelTasksOptions {
  /** Only count the tasks that match; change nothing (and answer 0 matched rather than throw `NotFoundError`). */
  dryRun?: boolean;
  /** Abort running tasks at once instead of asking them to stop. */
  terminate?: boolean;
}

/** What `listTasks` filters by; every filter given must match. */
export interface ListTasksOptions {
  /** Only tasks with one of these names. */
  names?: string[];
  /** Only tasks in one of these states (default: the unfinished ones). */
  states?: TaskState[];
  /** Only tasks of this tree. */
  rootId?: string;
  /** Only tasks with no progress, start or submission for this many milliseconds. */
  quietForMs?: number;
  /** The most tasks to answer, 1 to 10,000 (server default 1,000). */
  limit?: number;
  /** Also read each task's args and result (large for a campaign's batches). */
  includePayloads?: boolean;
}

/** Which page of records to read. */
export interface ListRecordsPageOptions extends ListRecordsOptions {
  /** A `nextPageToken` from an earlier page of the same listing; absent for the first page. */
  pageToken?: string;
}

/** What to ask the health service. */
export interface HealthOptions {
  /** A service name such as "celeritas.v1.TaskService"; default: the server as a whole. */
  service?: string;
}

/** The longest wait the server grants one GetTask. */
const longestServerWaitMs = 60_000;

const healthStatusNames: ReadonlyMap<HealthCheckResponse_ServingStatus, HealthStatus> = new Map([
  [HealthCheckResponse_ServingStatus.SERVING, "SERVING"],
  [HealthCheckResponse_ServingStatus.NOT_SERVING, "NOT_SERVING"],
  [HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN, "SERVICE_UNKNOWN"],
]);

/**
 * A connection to a celeritas coordinator. Cheap to keep, meant to be shared: one channel carries
 * every call. Close it with `close()` when done.
 *
 * Calls that are safe to repeat are retried on UNAVAILABLE with exponential backoff: reads,
 * cancel, purge, pausing and resuming queues, bulk retries and cancellations, and submissions,
 * which always carry an idempotency key (one is made up when the caller gives none) so a repeated
 * submission returns the task the first one created.
 */
export class Client {
  /** `celery inspect`: what the workers are doing and how deep the queues are. */
  readonly inspect: Inspector;
  /** Periodic schedules: list, put, delete, pause and resume. */
  readonly schedules: Schedules;

  private readonly tasks: TaskServiceClient;
  private readonly files: FileServiceClient;
  private readonly context: CallContext;
  private readonly rpc;
  /** How `util.inspect` names the connection: the URL and its kind of credentials. */
  private readonly connectionDescription: string;

  /**
   * @param url The coordinator: `http://host:port` (plain text), `https://host:port` (TLS), or a
   *   bare `host:port`. Default: `CELERITAS_COORDINATOR`, else `http://127.0.0.1:50051`.
   * @throws TypeError for an unusable URL, token or TLS setting, or TLS settings with a plain-text URL.
   */
  constructor(url?: string, options: ClientOptions = {}) {
    if (options.credentials !== undefined && options.tls !== undefined) {
      throw new TypeError("tls and credentials: give one of them (credentials replace what tls would make)");
    }
    const coordinator = url ?? process.env.CELERITAS_COORDINATOR ?? "http://127.0.0.1:50051";
    const token = resolveToken(options.token);
    const endpoint = endpointFromUrl(coordinator, options.credentials === undefined ? resolveTls(options.tls) : {});
    const channelCredentials = options.credentials ?? endpoint.credentials;
    const credentialKind = options.credentials !== undefined ? '"given"' : endpoint.secure ? '"tls"' : '"plain text"';
    this.connectionDescription = `url: ${JSON.stringify(coordinator)}, credentials: ${credentialKind}`;
    const grpcOptions = {
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      ...options.channelOptions,
      interceptors: options.interceptors,
    };
    this.tasks = new TaskServiceClient(endpoint.target, channelCredentials, grpcOptions);
    const sharedChannel = { ...grpcOptions, channelOverride: this.tasks.getChannel() };
    const inspectService = new InspectServiceClient(endpoint.target, channelCredentials, sharedChannel);
    const scheduleService = new ScheduleServiceClient(endpoint.target, channelCredentials, sharedChannel);
    const healthService = new HealthClient(endpoint.target, channelCredentials, sharedChannel);
    this.files = new FileServiceClient(endpoint.target, channelCredentials, sharedChannel);
    this.rpc = {
      submitTask: bind(this.tasks, this.tasks.submitTask),
      submitTasks: bind(this.tasks, this.tasks.submitTasks),
      getTask: bind(this.tasks, this.tasks.getTask),
      cancelTask: bind(this.tasks, this.tasks.cancelTask),
      purgeQueue: bind(this.tasks, this.tasks.purgeQueue),
      pauseQueue: bind(this.tasks, this.tasks.pauseQueue),
      resumeQueue: bind(this.tasks, this.tasks.resumeQueue),
      pauseTree: bind(this.tasks, this.tasks.pauseTree),
      resumeTree: bind(this.tasks, this.tasks.resumeTree),
      setRateLimit: bind(this.tasks, this.tasks.setRateLimit),
      clearRateLimit: bind(this.tasks, this.tasks.clearRateLimit),
      retryTasks: bind(this.tasks, this.tasks.retryTasks),
      cancelTasks: bind(this.tasks, this.tasks.cancelTasks),
      listRecords: bind(this.tasks, this.tasks.listRecords),
      listTasks: bind(this.tasks, this.tasks.listTasks),
      requeueTask: bind(this.tasks, this.tasks.requeueTask),
      failTask: bind(this.tasks, this.tasks.failTask),
      healthCheck: bind(healthService, healthService.check),
    };
    this.context = new CallContext(token, retryOptions(options.retry), options.timeoutMs ?? 30_000);
    this.inspect = new Inspector(
      {
        ping: bind(inspectService, inspectService.ping),
        active: bind(inspectService, inspectService.active),
        reserved: bind(inspectService, inspectService.reserved),
        scheduled: bind(inspectService, inspectService.scheduled),
        stats: bind(inspectService, inspectService.stats),
        activeQueues: bind(inspectService, inspectService.activeQueues),
        registered: bind(inspectService, inspectService.registered),
        queues: bind(inspectService, inspectService.queues),
        rateLimits: bind(inspectService, inspectService.rateLimits),
        closeIdleConnections: bind(inspectService, inspectService.closeIdleConnections),
      },
      this.context,
    );
    this.schedules = new Schedules(
      {
        listSchedules: bind(scheduleService, scheduleService.listSchedules),
        putSchedule: bind(scheduleService, scheduleService.putSchedule),
        deleteSchedule: bind(scheduleService, scheduleService.deleteSchedule),
        pauseSchedule: bind(scheduleService, scheduleService.pauseSchedule),
      },
      this.context,
    );
  }

  /**
   * Submits one task and answers its id. `args` is any JSON value (default `{}`).
   * Throws `InvalidArgumentError` for a spec the server refuses (its `field` names the field).
   */
  async submit(name: string, args?: unknown, options: SubmitOptions = {}): Promise<Submitted> {
    const request = { task: taskSpecToPb(name, args, options) };
    const response = await this.context.call(this.rpc.submitTask, request);
    return { taskId: response.taskId, created: response.created };
  }

  /** Submits up to 10,000 tasks in one durable write: all are accepted, or none. Answers in order. */
  async submitMany(submissions: readonly TaskSubmission[]): Promise<Submitted[]> {
    const request = { tasks: submissions.map(submissionToPb) };
    const response = await this.context.call(this.rpc.submitTasks, request);
    return response.tasks.map((task) => ({ taskId: task.taskId, created: task.created }));
  }

  /**
   * Reads a task; with `wait`, first waits up to that many milliseconds for it to finish; with
   * `tree`, first waits for its whole tree to finish (see `GetOptions.tree`).
   */
  async get(taskId: string, options: GetOptions = {}): Promise<Task> {
    if (options.tree === true) {
      await this.untilTreeFinished(taskId, options.wait);
      return this.get(taskId);
    }
    const waitUntil = Date.now() + Math.max(0, options.wait ?? 0);
    for (;;) {
      const waitMs = Math.min(longestServerWaitMs, Math.max(0, waitUntil - Date.now()));
      const request = { taskId, wait: waitMs > 0 ? durationToPb(waitMs) : undefined };
      const response = await this.context.call(this.rpc.getTask, request, waitMs + this.context.defaultTimeoutMs);
      const task = taskFromPb(response.task);
      if (task.finished || Date.now() >= waitUntil) {
        return task;
      }
    }
  }

  /** Follows the tree's progress stream to its end; throws `DeadlineExceededError` after `waitMs`. */
  private async untilTreeFinished(taskId: string, waitMs: number | undefined): Promise<void> {
    const deadline = new AbortController();
    const timer =
      waitMs === undefined
        ? undefined
        : setTimeout(() => {
            const message = `the tree of task ${taskId} had not finished after ${waitMs} ms`;
            deadline.abort(errorForStatus(status.DEADLINE_EXCEEDED, message));
          }, Math.max(0, waitMs));
    try {
      // Only the end matters: the stream ends after the tree's `treeFinished` event.
      for await (const _event of this.streamProgress(taskId, { signal: deadline.signal })) {
        // Read and dropped.
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Cancels a task (and its unfinished descendants); answers the task. A finished task is returned unchanged. */
  async cancel(taskId: string, options: CancelOptions = {}): Promise<Task> {
    const request = { taskId, terminate: options.terminate ?? false };
    const response = await this.context.call(this.rpc.cancelTask, request);
    return taskFromPb(response.task);
  }

  /**
   * Cancels every pending and scheduled task of a queue; answers how many. (After a retry on
   * UNAVAILABLE the count covers the last try only.)
   */
  async purge(queue: string): Promise<number> {
    const response = await this.context.call(this.rpc.purgeQueue, { queue });
    return response.cancelled;
  }

  /**
   * Pauses a queue: no worker gets a new lease from it, on any coordinator, until it is resumed;
   * tasks already leased or running finish. The pause is stored, so it outlives restarts;
   * `inspect.queues()` shows it as `pausedAt`. Answers false when the queue was paused already.
   * Throws `InvalidArgumentError` (field `queue`) for a queue the coordinator does not have.
   */
  async pauseQueue(queue: string): Promise<boolean> {
    const response = await this.context.call(this.rpc.pauseQueue, { queue });
    return response.changed;
  }

  /** Resumes a paused queue: its pending tasks are leased again at once. Answers false when it was not paused. */
  async resumeQueue(queue: string): Promise<boolean> {
    const response = await this.context.call(this.rpc.resumeQueue, { queue });
    return response.changed;
  }

  /**
   * Pauses the tree rooted at `taskId` (a campaign): its waiting tasks are held, its running ones
   * are asked to stop (a campaign batch after its current message) and wait again with no retry
   * counted. The pause is stored, so it outlives restarts; `get` shows it as `treePausedAt`.
   * Throws `NotFoundError` for an unknown id and `FailedPreconditionError` for a task that is not
   * a root or a tree whose tasks have all finished.
   */
  async pauseTree(taskId: string): Promise<TreePause> {
    const response = await this.context.call(this.rpc.pauseTree, { taskId });
    return { changed: response.changed, pausedAt: response.pausedAt, stopping: response.stopping };
  }

  /** Resumes a paused tree where it left off. Answers false when it was not paused. */
  async resumeTree(taskId: string): Promise<boolean> {
    const response = await this.context.call(this.rpc.resumeTree, { taskId });
    return response.changed;
  }

  /**
   * Limits `key` (`"domain:gmail.com"`, or a pattern where `*` stands for any text) to `rate`
   * (`"20/s"`, `"600/m"`, `"3600/h"`) on every coordinator, stored, over a configured limit of
   * the same pattern; tasks already waiting that it covers are limited too. Answers the rate it
   * had through the API before and how many waiting tasks it now covers. Throws
   * `InvalidArgumentError` with `field` `rate` or `key` for a malformed one.
   */
  async setRateLimit(key: string, rate: string): Promise<{ previous?: string; governed: number }> {
    const response = await this.context.call(this.rpc.setRateLimit, { key, rate });
    return { previous: response.previous, governed: response.governed };
  }

  /**
   * Removes a limit set with `setRateLimit` (a configured one of the pattern holds again);
   * answers the rate it had. Throws `NotFoundError` when there is none.
   */
  async clearRateLimit(key: string): Promise<string> {
    const response = await this.context.call(this.rpc.clearRateLimit, { key });
    return response.previous;
  }

  /**
   * Puts the failed tasks that match `selector` back on their queues, each with a fresh set of
   * retries (their failed attempts stay in `failures`); with `dryRun` only counts them. Tasks that
   * fail after the call began are not included. Throws `InvalidArgumentError` for an empty selector
   * (field `selector`) or one naming states other than `"failed"`, and `NotFoundError` when nothing
   * matches (unless `dryRun`).
   */
  async retryTasks(selector: TaskSelector, options: RetryTasksOptions = {}): Promise<BulkResult> {
    const request = { selector: taskSelectorToPb(selector), dryRun: options.dryRun ?? false };
    const response = await this.context.call(this.rpc.retryTasks, request);
    return { matched: response.matched, changed: response.retried };
  }

  /**
   * Cancels the unfinished tasks that match `selector`, each as `cancel` would (running ones are
   * asked to stop, or aborted with `terminate`; their unfinished descendants are cancelled too);
   * with `dryRun` only counts them. Tasks submitted after the call began are not included. Throws
   * `InvalidArgumentError` for an empty selector (field `selector`) or one naming finished states,
   * and `NotFoundError` when nothing matches (unless `dryRun`).
   */
  async cancelTasks(selector: TaskSelector, options: CancelTasksOptions = {}): Promise<BulkResult> {
    const request = {
      selector: taskSelectorToPb(selector),
      dryRun: options.dryRun ?? false,
      terminate: options.terminate ?? false,
    };
    const response = await this.context.call(this.rpc.cancelTasks, request);
    return { matched: response.matched, changed: response.cancelled };
  }

  /**
   * Lists tasks with one of `names` (any when absent) in one of `states` (the unfinished ones when
   * absent), of the tree `rootId`, with no progress, start or submission for `quietForMs`; longest
   * quiet first, at most `limit` (server default 1,000).
   */
  async listTasks(options: ListTasksOptions = {}): Promise<Task[]> {
    const request = {
      names: options.names ?? [],
      states: (options.states ?? []).map((state, index) => taskStateToPb(state, `states[${index}]`)),
      quietFor: durationToPb(options.quietForMs),
      limit: options.limit ?? 0,
      rootId: options.rootId ?? "",
      includePayloads: options.includePayloads ?? false,
    };
    const response = await this.context.call(this.rpc.listTasks, request);
    return response.tasks.map((task) => taskFromPb(task));
  }

  /**
   * Ends a leased or running task's attempt (its worker is told to abort it) and puts the task back
   * on its queue, recording `reason` as a failed attempt that counts a retry; with no retry left it
   * fails. With `attempt`, only while the task is on that attempt (`FailedPreconditionError`).
   */
  async requeue(taskId: string, reason: string, options: { attempt?: number } = {}): Promise<Task> {
    const request = { taskId, reason, attempt: options.attempt ?? 0 };
    return taskFromPb((await this.context.call(this.rpc.requeueTask, request)).task);
  }

  /** Ends a leased or running task's attempt and fails the task for good with `reason`. */
  async fail(taskId: string, reason: string, options: { attempt?: number } = {}): Promise<Task> {
    const request = { taskId, reason, attempt: options.attempt ?? 0 };
    return taskFromPb((await this.context.call(this.rpc.failTask, request)).task);
  }

  /**
   * Follows a task tree: yields its events until the tree finishes, then ends. `taskId` must be a
   * root (a child's id throws `FailedPreconditionError` naming the root). A broken stream is
   * resumed after the last event yielded, so no event is lost or repeated.
   *
   * ```ts
   * for await (const event of client.streamProgress(taskId)) {
   *   console.log(event.aggregate.tasksFinished, "/", event.aggregate.tasksTotal);
   * }
   * ```
   */
  streamProgress(taskId: string, options: StreamProgressOptions = {}): AsyncGenerator<ProgressEvent, void, undefined> {
    const open = this.tasks.streamProgress.bind(this.tasks);
    return followProgress((request, metadata) => open(request, metadata), this.context, taskId, options);
  }

  /** Every record a task emitted (or its whole tree, with `wholeTree`), oldest first, page after page. */
  async *listRecords(taskId: string, options: ListRecordsOptions = {}): AsyncGenerator<TaskRecord, void, undefined> {
    let pageToken: string | undefined;
    do {
      const page = await this.listRecordsPage(taskId, { ...options, pageToken });
      yield* page.records;
      pageToken = page.nextPageToken;
    } while (pageToken !== undefined);
  }

  /** One page of records; pass its `nextPageToken` back for the next. */
  async listRecordsPage(taskId: string, options: ListRecordsPageOptions = {}): Promise<RecordPage> {
    const request = {
      taskId,
      wholeTree: options.wholeTree ?? false,
      kind: options.kind ?? "",
      status: options.status ?? "",
      pageSize: options.pageSize ?? 0,
      pageToken: options.pageToken ?? "",
    };
    const response = await this.context.call(this.rpc.listRecords, request);
    return {
      records: response.records.map(recordFromPb),
      nextPageToken: response.nextPageToken === "" ? undefined : response.nextPageToken,
    };
  }

  /**
   * Stores a file in the coordinator for tasks to read and answers it; its `fileId` goes in a
   * task's args (workers on any host read it back by that id). `pathOrBuffer` is a path (read
   * in 1 MiB pieces, never whole) or the bytes themselves; `name` defaults to the path's last
   * part. A file over the coordinator's `files.max_bytes` throws `InvalidArgumentError` naming
   * both sizes, and nothing is kept. No deadline, and not retried: a stream cannot be replayed.
   */
  async upload(pathOrBuffer: string | Uint8Array, options: UploadOptions = {}): Promise<StoredFile> {
    return upload(this.files, this.context, pathOrBuffer, options);
  }

  /**
   * Asks the coordinator's gRPC health service (SERVING while its store answers). Tried once, not
   * retried: an unreachable coordinator throws `UnavailableError` at once.
   */
  async health(options: HealthOptions = {}): Promise<HealthStatus> {
    const response = await this.context.callOnce(this.rpc.healthCheck, { service: options.service ?? "" });
    return healthStatusNames.get(response.status) ?? "UNKNOWN";
  }

  /** Closes the channel; calls in flight fail with CANCELLED or UNAVAILABLE. */
  close(): void {
    this.tasks.close();
  }

  /** What `util.inspect` (and `console.log`) shows: the URL and whether there is a token, never the token or a key. */
  [inspect.custom](): string {
    return `Client { ${this.connectionDescription}, token: ${this.context.hasToken ? '"(set)"' : "none"} }`;
  }
}

/** The defaults, overridden by what the caller set (an explicit `undefined` keeps the default). */
function retryOptions(overrides: Partial<RetryOptions> = {}): RetryOptions {
  const defined = Object.entries(overrides).filter(([, value]) => value !== undefined);
  return { ...defaultRetryOptions, ...Object.fromEntries(defined) };
}

/** The (request, metadata, options, callback) form of a generated unary method: its last overload. */
type UnaryForm<Method> = Method extends (
  request: infer Request,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: infer Response) => void,
) => ClientUnaryCall
  ? UnaryMethod<Request, Response>
  : never;

/** A generated unary method bound to its client, typed in the form `CallContext` calls. */
function bind<Method extends (...args: never[]) => ClientUnaryCall>(client: object, method: Method): UnaryForm<Method> {
  return method.bind(client) as UnaryForm<Method>;
}
