// `client.schedules`: the coordinator's ScheduleService, periodic schedules (Celery beat). Every
// call is safe to repeat, so every one is retried on UNAVAILABLE.

import type { CallContext, UnaryMethod } from "./connection";
import { durationFromPb, durationToPb, nonEmpty, parseJson, scheduledTaskToPb } from "./convert";
import * as pb from "./generated/celeritas/v1/schedules";

/**
 * What each tick of a schedule submits. There is no countdown, ETA, expiry or idempotency key:
 * a tick runs when it is due, and every tick must make a new task.
 */
export interface ScheduledTask {
  /** The task's registered name. */
  name: string;
  /** Its arguments, any JSON value; default `{}`. */
  args?: unknown;
  /** The queue; when absent the coordinator's routes decide. */
  queue?: string;
  /** Priority within the queue, 0 to 255. */
  priority?: number;
  /** How many failed attempts may be retried, 0 to 1000; default: the task's configured policy. */
  maxRetries?: number;
  /** When the running task is asked to stop, in milliseconds. */
  softTimeLimit?: number;
  /** When the running task is aborted, in milliseconds. */
  hardTimeLimit?: number;
}

/** A periodic schedule, as the coordinator stores it. */
export interface Schedule {
  name: string;
  /** What each tick submits. */
  task?: ScheduledTask;
  /** Ticks every this many milliseconds (or by `cron`). */
  everyMs?: number;
  /** Ticks by this cron expression (or every `everyMs`). */
  cron?: string;
  /** The IANA time zone the cron expression is read in. */
  timezone: string;
  paused: boolean;
  nextRunAt?: Date;
  lastRunAt?: Date;
  /** The task its last tick submitted. */
  lastTaskId?: string;
}

/** A schedule to create or replace. Give exactly one of `everyMs` and `cron`. */
export interface ScheduleDefinition {
  /** Unique; 1 to 200 characters of letters, digits, '_', '.', ':' and '-'. */
  name: string;
  /** What each tick submits. */
  task: ScheduledTask;
  /** Tick every this many milliseconds. */
  everyMs?: number;
  /** Tick by this cron expression: five fields (minute hour day month weekday), or six with seconds first. */
  cron?: string;
  /** The IANA time zone `cron` is read in, such as "Europe/Moscow"; default "UTC". */
  timezone?: string;
  /** Create it paused; default false. */
  paused?: boolean;
}

/** The ScheduleService methods the client calls, bound to their grpc-js client. */
export interface ScheduleMethods {
  listSchedules: UnaryMethod<pb.ListSchedulesRequest, pb.ListSchedulesResponse>;
  putSchedule: UnaryMethod<pb.PutScheduleRequest, pb.PutScheduleResponse>;
  deleteSchedule: UnaryMethod<pb.DeleteScheduleRequest, pb.DeleteScheduleResponse>;
  pauseSchedule: UnaryMethod<pb.PauseScheduleRequest, pb.PauseScheduleResponse>;
}

/** `client.schedules`: list, create or replace, delete, pause and resume periodic schedules. */
export class Schedules {
  constructor(
    private readonly methods: ScheduleMethods,
    private readonly context: CallContext,
  ) {}

  /** Every schedule, by name: the configured ones and those made through this API. */
  async list(): Promise<Schedule[]> {
    const response = await this.context.call(this.methods.listSchedules, {});
    return response.schedules.map(scheduleFromPb);
  }

  /**
   * Creates a schedule, or replaces the one with the same name (keeping its next tick when the
   * timing is unchanged); answers it as stored, with `nextRunAt`. A definition the server refuses
   * throws `InvalidArgumentError` naming the field (`schedule.cron`).
   */
  async put(definition: ScheduleDefinition): Promise<Schedule> {
    const response = await this.context.call(this.methods.putSchedule, { schedule: scheduleToPb(definition) });
    return scheduleFromPb(response.schedule);
  }

  /**
   * Removes a schedule; an unknown name throws `NotFoundError` (as does a retry whose earlier try
   * had in fact removed it).
   */
  async delete(name: string): Promise<void> {
    await this.context.call(this.methods.deleteSchedule, { name });
  }

  /** Pauses a schedule (it stops ticking); answers it. */
  async pause(name: string): Promise<Schedule> {
    return this.setPaused(name, true);
  }

  /** Resumes a paused schedule; its next tick is the first one after now. Answers it. */
  async resume(name: string): Promise<Schedule> {
    return this.setPaused(name, false);
  }

  private async setPaused(name: string, paused: boolean): Promise<Schedule> {
    const response = await this.context.call(this.methods.pauseSchedule, { name, paused });
    return scheduleFromPb(response.schedule);
  }
}

function scheduleToPb(definition: ScheduleDefinition): pb.Schedule {
  const { everyMs, cron } = definition;
  if (everyMs !== undefined && cron !== undefined) {
    throw new TypeError(`schedule ${JSON.stringify(definition.name)}: give everyMs or cron, not both`);
  }
  // Without either the server refuses it, naming schedule.timing.
  const timing: pb.Schedule["timing"] =
    everyMs !== undefined
      ? { $case: "every", value: durationToPb(everyMs)! }
      : cron !== undefined
        ? { $case: "cron", value: cron }
        : undefined;
  return pb.Schedule.fromPartial({
    name: definition.name,
    task: scheduledTaskToPb(definition.task),
    timing,
    timezone: definition.timezone ?? "",
    paused: definition.paused ?? false,
  });
}

/** A schedule from the server (ScheduleService, or InspectService's `scheduled`). */
export function scheduleFromPb(schedule: pb.Schedule | undefined): Schedule {
  if (schedule === undefined) {
    throw new TypeError("the server answered without a schedule");
  }
  const spec = schedule.task;
  return {
    name: schedule.name,
    task:
      spec === undefined
        ? undefined
        : {
            name: spec.name,
            args: parseJson(spec.argsJson) ?? {},
            queue: spec.queue,
            priority: spec.priority,
            maxRetries: spec.maxRetries,
            softTimeLimit: durationFromPb(spec.softTimeLimit),
            hardTimeLimit: durationFromPb(spec.hardTimeLimit),
          },
    everyMs: schedule.timing?.$case === "every" ? durationFromPb(schedule.timing.value) : undefined,
    cron: schedule.timing?.$case === "cron" ? schedule.timing.value : undefined,
    timezone: schedule.timezone === "" ? "UTC" : schedule.timezone,
    paused: schedule.paused,
    nextRunAt: schedule.nextRunAt,
    lastRunAt: schedule.lastRunAt,
    lastTaskId: nonEmpty(schedule.lastTaskId),
  };
}
