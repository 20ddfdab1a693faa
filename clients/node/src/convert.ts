// Conversions between the client's plain types and the generated protobuf messages. This module
// and the service wrappers (client, progress, inspect, schedules) are the only code that sees `pb`.

import { randomUUID } from "node:crypto";
import type { Duration } from "./generated/google/protobuf/duration";
import * as pb from "./generated/celeritas/v1/tasks";
import type { ScheduledTask } from "./schedules";
import type {
  Aggregate,
  AttemptFailure,
  Progress,
  ProgressChange,
  ProgressEvent,
  SubmitOptions,
  Task,
  TaskError,
  TaskRecord,
  TaskSelector,
  TaskState,
  TaskSubmission,
} from "./types";
import { terminalStates } from "./types";

const stateNames: ReadonlyMap<pb.TaskState, TaskState> = new Map([
  [pb.TaskState.TASK_STATE_PENDING, "pending"],
  [pb.TaskState.TASK_STATE_SCHEDULED, "scheduled"],
  [pb.TaskState.TASK_STATE_LEASED, "leased"],
  [pb.TaskState.TASK_STATE_RUNNING, "running"],
  [pb.TaskState.TASK_STATE_SUCCEEDED, "succeeded"],
  [pb.TaskState.TASK_STATE_FAILED, "failed"],
  [pb.TaskState.TASK_STATE_CANCELLED, "cancelled"],
  [pb.TaskState.TASK_STATE_EXPIRED, "expired"],
  [pb.TaskState.TASK_STATE_WAITING, "waiting"],
]);

export function taskStateFromPb(state: pb.TaskState): TaskState {
  return stateNames.get(state) ?? "unknown";
}

/** A state as the server numbers it; `field` names it in the error for a state it does not know. */
export function taskStateToPb(state: TaskState, field: string): pb.TaskState {
  for (const [number, name] of stateNames) {
    if (name === state) {
      return number;
    }
  }
  throw new RangeError(`${field}: ${JSON.stringify(state)} is not a task state`);
}

/** Milliseconds as a protobuf Duration; `undefined` stays absent. */
export function durationToPb(milliseconds: number | undefined): Duration | undefined {
  if (milliseconds === undefined) {
    return undefined;
  }
  if (!Number.isFinite(milliseconds)) {
    throw new RangeError(`a duration must be a finite number of milliseconds, got ${milliseconds}`);
  }
  const seconds = Math.trunc(milliseconds / 1000);
  const nanos = Math.round((milliseconds - seconds * 1000) * 1_000_000);
  return { seconds, nanos };
}

/** A protobuf Duration as milliseconds. */
export function durationFromPb(duration: Duration | undefined): number | undefined {
  return duration === undefined ? undefined : duration.seconds * 1000 + duration.nanos / 1_000_000;
}

/** Empty text, the protobuf default, as `undefined`. */
export function nonEmpty(text: string): string | undefined {
  return text === "" ? undefined : text;
}

/** Parses JSON text from the server; empty text is `undefined`, text that does not parse is returned as is. */
export function parseJson(text: string): unknown {
  if (text === "") {
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function argsJson(args: unknown): string {
  if (args === undefined) {
    return "{}";
  }
  const text = JSON.stringify(args);
  if (text === undefined) {
    throw new TypeError("task args must be JSON-serialisable");
  }
  return text;
}

/** A submission as a TaskSpec, with an idempotency key made up when it has none. */
export function taskSpecToPb(name: string, args: unknown, options: SubmitOptions = {}): pb.TaskSpec {
  return pb.TaskSpec.fromPartial({
    name,
    argsJson: argsJson(args),
    queue: options.queue,
    priority: options.priority ?? 0,
    countdown: durationToPb(options.countdown),
    eta: options.eta,
    expiresAt: options.expiresAt,
    expiresIn: durationToPb(options.expiresIn),
    maxRetries: options.maxRetries,
    idempotencyKey: options.idempotencyKey ?? randomUUID(),
    softTimeLimit: durationToPb(options.softTimeLimit),
    hardTimeLimit: durationToPb(options.hardTimeLimit),
    parentId: options.parentId ?? "",
    rateKeys: options.rateKeys ?? {},
    groupKey: options.groupKey ?? "",
    maxConcurrency: options.maxConcurrency,
  });
}

export function submissionToPb(submission: TaskSubmission): pb.TaskSpec {
  const { name, args, ...options } = submission;
  return taskSpecToPb(name, args, options);
}

/** A moment of a selector; `field` names it in the error for something that is not a valid `Date`. */
function momentToPb(moment: Date | undefined, field: string): Date | undefined {
  if (moment === undefined) {
    return undefined;
  }
  if (!(moment instanceof Date) || Number.isNaN(moment.getTime())) {
    throw new TypeError(`${field}: expected a valid Date, got ${String(moment)}`);
  }
  return moment;
}

/** A bulk operation's selector; an empty one is left for the server to refuse (it names `selector`). */
export function taskSelectorToPb(selector: TaskSelector): pb.TaskSelector {
  return pb.TaskSelector.fromPartial({
    names: selector.names ?? [],
    queues: selector.queues ?? [],
    rootId: selector.rootId ?? "",
    states: (selector.states ?? []).map((state, index) => taskStateToPb(state, `selector.states[${index}]`)),
    errorKinds: selector.errorKinds ?? [],
    createdAfter: momentToPb(selector.createdAfter, "selector.createdAfter"),
    createdBefore: momentToPb(selector.createdBefore, "selector.createdBefore"),
    finishedAfter: momentToPb(selector.finishedAfter, "selector.finishedAfter"),
    finishedBefore: momentToPb(selector.finishedBefore, "selector.finishedBefore"),
  });
}

/** What a schedule's ticks submit, as a TaskSpec: no idempotency key, or every tick would return the first task. */
export function scheduledTaskToPb(task: ScheduledTask): pb.TaskSpec {
  return pb.TaskSpec.fromPartial({
    name: task.name,
    argsJson: argsJson(task.args),
    queue: task.queue,
    priority: task.priority ?? 0,
    maxRetries: task.maxRetries,
    softTimeLimit: durationToPb(task.softTimeLimit),
    hardTimeLimit: durationToPb(task.hardTimeLimit),
  });
}

function taskErrorFromPb(error: pb.TaskError | undefined): TaskError | undefined {
  return error === undefined ? undefined : { kind: error.kind, message: error.message };
}

function failureFromPb(failure: pb.AttemptFailure): AttemptFailure {
  return {
    attempt: failure.attempt,
    workerId: nonEmpty(failure.workerId),
    kind: failure.kind,
    message: failure.message,
    at: failure.at,
  };
}

export function taskFromPb(task: pb.Task | undefined): Task {
  if (task === undefined) {
    throw new TypeError("the server answered without a task");
  }
  const state = taskStateFromPb(task.state);
  return {
    id: task.id,
    name: task.name,
    queue: task.queue,
    priority: task.priority,
    state,
    finished: terminalStates.has(state),
    args: parseJson(task.argsJson),
    result: parseJson(task.resultJson),
    error: taskErrorFromPb(task.error),
    attempt: task.attempt,
    retries: task.retries,
    maxRetries: task.maxRetries,
    createdAt: task.createdAt,
    runAt: task.runAt,
    startedAt: task.startedAt,
    finishedAt: task.finishedAt,
    expiresAt: task.expiresAt,
    workerId: nonEmpty(task.workerId),
    parentId: nonEmpty(task.parentId),
    rootId: task.rootId,
    idempotencyKey: nonEmpty(task.idempotencyKey),
    failures: task.failures.map(failureFromPb),
    progress: task.progress === undefined ? undefined : progressFromPb(task.progress),
    rateKeys: { ...task.rateKeys },
    groupKey: nonEmpty(task.groupKey),
    maxConcurrency: task.maxConcurrency,
    treePausedAt: task.treePausedAt,
  };
}

export function progressFromPb(progress: pb.Progress | undefined): Progress {
  return { done: progress?.done ?? 0, total: progress?.total ?? 0, message: progress?.message ?? "" };
}

function aggregateFromPb(aggregate: pb.Aggregate | undefined): Aggregate {
  return {
    tasksTotal: aggregate?.tasksTotal ?? 0,
    tasksFinished: aggregate?.tasksFinished ?? 0,
    tasksByState: { ...aggregate?.tasksByState },
    recordsByStatus: { ...aggregate?.recordsByStatus },
    progress: progressFromPb(aggregate?.progress),
  };
}

function changeFromPb(event: pb.StreamProgressResponse["event"]): ProgressChange {
  switch (event?.$case) {
    case "stateChanged":
      return {
        type: "stateChanged",
        taskId: event.value.taskId,
        state: taskStateFromPb(event.value.state),
        error: taskErrorFromPb(event.value.error),
      };
    case "progressUpdated":
      return { type: "progressUpdated", taskId: event.value.taskId, progress: progressFromPb(event.value.progress) };
    case "treeUpdated":
      return {
        type: "treeUpdated",
        tasksSubmitted: event.value.tasksSubmitted,
        tasksFinished: event.value.tasksFinished,
        recordsAdded: event.value.recordsAdded,
        message: event.value.message,
      };
    case "treeFinished":
      return { type: "treeFinished", rootState: taskStateFromPb(event.value.rootState) };
    default:
      return { type: "unknown" };
  }
}

export function progressEventFromPb(event: pb.StreamProgressResponse): ProgressEvent {
  return {
    sequence: event.sequence,
    rootId: event.rootId,
    at: event.at,
    change: changeFromPb(event.event),
    aggregate: aggregateFromPb(event.aggregate),
  };
}

export function recordFromPb(record: pb.Record): TaskRecord {
  return {
    taskId: record.taskId,
    rootId: record.rootId,
    kind: record.kind,
    key: record.key,
    status: record.status,
    data: parseJson(record.dataJson),
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
  };
}
