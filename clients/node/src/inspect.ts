// `celery inspect`, answered by the coordinator's InspectService: what the workers are doing and
// how deep the queues are. Every method is a read, so every one is retried on UNAVAILABLE.

import type { CallContext, UnaryMethod } from "./connection";
import { durationFromPb, durationToPb, nonEmpty, taskFromPb } from "./convert";
import * as pb from "./generated/celeritas/v1/inspect";
import { scheduleFromPb, type Schedule } from "./schedules";
import type { Task } from "./types";

/** One worker's answer to a ping. */
export interface WorkerPing {
  workerId: string;
  hostname: string;
  /** Whether it answered in time. */
  answered: boolean;
  /** The round trip in milliseconds, when it answered. */
  roundTripMs?: number;
  /** The coordinator it is connected to. */
  coordinatorId?: string;
  /** Why there is no round trip (connected elsewhere, did not answer). */
  detail?: string;
}

/** The tasks of one worker. */
export interface WorkerTasks {
  workerId: string;
  /** Its tasks, each with its last progress report (`progress`). */
  tasks: Task[];
}

/** Scheduled work: tasks waiting for their ETA or a retry's backoff, and the periodic schedules. */
export interface ScheduledWork {
  /** Soonest first. */
  tasks: Task[];
  schedules: Schedule[];
}

/** One worker's process and counters. */
export interface WorkerStats {
  workerId: string;
  hostname: string;
  pid: number;
  /** How long the process has run, in milliseconds. */
  uptimeMs?: number;
  concurrency: number;
  prefetchMultiplier: number;
  /** Attempts ended, by task name. */
  processed: Record<string, number>;
  /** Attempts failed, by task name. */
  failed: Record<string, number>;
  memoryRssBytes: number;
  /** Whether it is connected now. */
  connected: boolean;
  /** The coordinator it is (or was last) connected to. */
  coordinatorId?: string;
  version: string;
}

/** A queue and its priority. */
export interface QueueRef {
  name: string;
  priority: number;
}

/** The queues one worker consumes, highest priority first. */
export interface WorkerQueues {
  workerId: string;
  queues: QueueRef[];
  connected: boolean;
}

/** The task names one worker runs. */
export interface WorkerTaskNames {
  workerId: string;
  taskNames: string[];
  connected: boolean;
}

/** One queue's depth. */
export interface QueueDepth {
  name: string;
  priority: number;
  /** Unfinished tasks by state name: pending, scheduled, leased, running, waiting. */
  tasksByState: Record<string, number>;
  /** How long its oldest pending task has waited, in milliseconds; undefined when none is pending. */
  oldestPendingAgeMs?: number;
  /** Workers connected to the answering coordinator that consume it. */
  consumers: number;
  /**
   * Pending tasks by task name that no connected worker of the queue registered; they wait for
   * a worker that does (a task is leased only to workers that registered its name).
   */
  unserved: Record<string, number>;
  /** Since when the queue is paused (`pauseQueue`): its tasks are not leased until it is resumed. Undefined when it is not paused. */
  pausedAt?: Date;
}

/** A rate limit in force. */
export interface RateLimitRule {
  /** The key, or a pattern where `*` stands for any text. */
  pattern: string;
  perSecond: number;
  /** `"api"` (set with `setRateLimit`) or `"config"`. */
  source: "api" | "config";
  /** When it was set through the API. */
  setAt?: Date;
  /** Who set it (a token's name), when known. */
  setBy?: string;
}

/** A limited key in use, with the rate it runs at now (lower after pushback). */
export interface KeyRate {
  key: string;
  configuredPerSecond: number;
  effectivePerSecond: number;
  /** Tokens left in its bucket (negative after a costly lease). */
  tokens: number;
  /** When pushback last slowed it. */
  slowedAt?: Date;
}

/** What `inspect.rateLimits()` answers. */
export interface RateLimits {
  /** Every limit in force, the first match first. */
  limits: RateLimitRule[];
  /** Each limited key used so far. */
  keys: KeyRate[];
}

/** The InspectService methods the client calls, bound to their grpc-js client. */
export interface InspectMethods {
  ping: UnaryMethod<pb.PingRequest, pb.PingResponse>;
  active: UnaryMethod<pb.ActiveRequest, pb.ActiveResponse>;
  reserved: UnaryMethod<pb.ReservedRequest, pb.ReservedResponse>;
  scheduled: UnaryMethod<pb.ScheduledRequest, pb.ScheduledResponse>;
  stats: UnaryMethod<pb.StatsRequest, pb.StatsResponse>;
  activeQueues: UnaryMethod<pb.ActiveQueuesRequest, pb.ActiveQueuesResponse>;
  registered: UnaryMethod<pb.RegisteredRequest, pb.RegisteredResponse>;
  queues: UnaryMethod<pb.QueuesRequest, pb.QueuesResponse>;
  rateLimits: UnaryMethod<pb.RateLimitsRequest, pb.RateLimitsResponse>;
  closeIdleConnections: UnaryMethod<pb.CloseIdleConnectionsRequest, pb.CloseIdleConnectionsResponse>;
}

/** `client.inspect`: what `celery inspect` answers. */
export class Inspector {
  constructor(
    private readonly methods: InspectMethods,
    private readonly context: CallContext,
  ) {}

  /** A round trip to each connected worker; workers connected elsewhere are listed with a `detail`. */
  async ping(options: { timeout?: number } = {}): Promise<WorkerPing[]> {
    const timeout = options.timeout;
    // The server waits up to `timeout` (default 2 s) for answers; the deadline leaves room for that.
    const deadlineMs = (timeout ?? 2000) + this.context.defaultTimeoutMs;
    const response = await this.context.call(this.methods.ping, { timeout: durationToPb(timeout) }, deadlineMs);
    return response.workers.map(workerPingFromPb);
  }

  /**
   * Tells the connected workers consuming `queue` (every one when absent) to close the idle
   * connections of their SMTP pools; each answer's `detail` says what was closed.
   */
  async closeIdleConnections(options: { queue?: string; timeout?: number } = {}): Promise<WorkerPing[]> {
    const deadlineMs = (options.timeout ?? 2000) + this.context.defaultTimeoutMs;
    const request = { queue: options.queue ?? "", timeout: durationToPb(options.timeout) };
    const response = await this.context.call(this.methods.closeIdleConnections, request, deadlineMs);
    return response.workers.map(workerPingFromPb);
  }

  /**
   * The tasks running now, by worker: at most `limit` (server default 1,000; at most 10,000,
   * or 100 with args). Args are left out (`{}`) unless `includeArgs`.
   */
  async active(options: { limit?: number; includeArgs?: boolean } = {}): Promise<WorkerTasks[]> {
    const request = { limit: options.limit ?? 0, includeArgs: options.includeArgs ?? false };
    const response = await this.context.call(this.methods.active, request);
    return response.workers.map(workerTasksFromPb);
  }

  /** The tasks leased but not started (prefetched), by worker; `limit` and `includeArgs` as for `active`. */
  async reserved(options: { limit?: number; includeArgs?: boolean } = {}): Promise<WorkerTasks[]> {
    const request = { limit: options.limit ?? 0, includeArgs: options.includeArgs ?? false };
    const response = await this.context.call(this.methods.reserved, request);
    return response.workers.map(workerTasksFromPb);
  }

  /** Tasks waiting for their ETA or a retry (at most `limit`, default 100), and the periodic schedules. */
  async scheduled(options: { limit?: number } = {}): Promise<ScheduledWork> {
    const response = await this.context.call(this.methods.scheduled, { limit: options.limit ?? 0 });
    return { tasks: response.tasks.map(taskFromPb), schedules: response.schedules.map(scheduleFromPb) };
  }

  /** Each known worker's process and counters. */
  async stats(): Promise<WorkerStats[]> {
    const response = await this.context.call(this.methods.stats, {});
    return response.workers.map((worker) => ({
      workerId: worker.workerId,
      hostname: worker.hostname,
      pid: worker.pid,
      uptimeMs: durationFromPb(worker.uptime),
      concurrency: worker.concurrency,
      prefetchMultiplier: worker.prefetchMultiplier,
      processed: { ...worker.processed },
      failed: { ...worker.failed },
      memoryRssBytes: worker.memoryRssBytes,
      connected: worker.connected,
      coordinatorId: nonEmpty(worker.coordinatorId),
      version: worker.version,
    }));
  }

  /** The queues each known worker consumes. */
  async activeQueues(): Promise<WorkerQueues[]> {
    const response = await this.context.call(this.methods.activeQueues, {});
    return response.workers.map((worker) => ({
      workerId: worker.workerId,
      queues: worker.queues.map((queue) => ({ name: queue.name, priority: queue.priority })),
      connected: worker.connected,
    }));
  }

  /** The task names each known worker runs. */
  async registered(): Promise<WorkerTaskNames[]> {
    const response = await this.context.call(this.methods.registered, {});
    return response.workers.map((worker) => ({
      workerId: worker.workerId,
      taskNames: [...worker.taskNames],
      connected: worker.connected,
    }));
  }

  /** Each configured queue's depth and, for a paused one, since when (`pausedAt`), highest priority first. */
  async queues(): Promise<QueueDepth[]> {
    const response = await this.context.call(this.methods.queues, {});
    return response.queues.map((queue) => ({
      name: queue.name,
      priority: queue.priority,
      tasksByState: { ...queue.tasksByState },
      oldestPendingAgeMs: durationFromPb(queue.oldestPendingAge),
      consumers: queue.consumers,
      unserved: { ...queue.unserved },
      pausedAt: queue.pausedAt,
    }));
  }

  /** Every rate limit in force (configured or set through the API) and each limited key in use. */
  async rateLimits(): Promise<RateLimits> {
    const response = await this.context.call(this.methods.rateLimits, {});
    return {
      limits: response.limits.map((rule) => ({
        pattern: rule.pattern,
        perSecond: rule.perSecond,
        source: rule.setThroughApi ? "api" : "config",
        setAt: rule.setAt,
        setBy: nonEmpty(rule.setBy),
      })),
      keys: response.keys.map((key) => ({
        key: key.key,
        configuredPerSecond: key.configuredPerSecond,
        effectivePerSecond: key.effectivePerSecond,
        tokens: key.tokens,
        slowedAt: key.slowedAt,
      })),
    };
  }
}

function workerPingFromPb(ping: pb.WorkerPing): WorkerPing {
  return {
    workerId: ping.workerId,
    hostname: ping.hostname,
    answered: ping.answered,
    roundTripMs: durationFromPb(ping.roundTrip),
    coordinatorId: nonEmpty(ping.coordinatorId),
    detail: nonEmpty(ping.detail),
  };
}

function workerTasksFromPb(worker: pb.WorkerTasks): WorkerTasks {
  return { workerId: worker.workerId, tasks: worker.tasks.map(taskFromPb) };
}
