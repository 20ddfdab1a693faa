// client.inspect: `celery inspect` through the coordinator's InspectService, against
// `celeritas dev`: one coordinator and ONE worker consuming all four seed queues, concurrency 4,
// prefetch multiplier 1.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, type Task, type WorkerStats } from "../src";
import { DevServer } from "./support/server";

/** The seed's queues and their priorities. */
const seedQueues: Record<string, number> = { campaigns: 10, email: 10, import: 5, default: 0 };

/** The seed's periodic schedules, which exist from the start. */
const seedSchedules = ["cleanup_smtp_connections", "cleanup_stuck_campaigns", "monitor_campaign_progress"];

/** The states `queues` counts: every unfinished one. */
const unfinishedStates = ["pending", "scheduled", "leased", "running", "waiting"];

/** Workers send their counters with their heartbeats, every 5 s by default; allow several. */
const heartbeatWaitMs = 20_000;

describe("inspect", () => {
  let server: DevServer;
  let client: Client;

  before(async () => {
    server = await DevServer.start();
    client = new Client(server.url);
  });

  after(async () => {
    client?.close();
    await server?.dispose();
  });

  async function untilState(taskId: string, state: string): Promise<Task> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const task = await client.get(taskId, { wait: 200 });
      if (task.state === state || Date.now() > deadline) {
        return task;
      }
    }
  }

  /** The connected worker's stats once `done` holds for them, or the last seen after `heartbeatWaitMs`. */
  async function statsUntil(done: (worker: WorkerStats) => boolean): Promise<WorkerStats[]> {
    const deadline = Date.now() + heartbeatWaitMs;
    for (;;) {
      const workers = await client.inspect.stats();
      const connected = workers.filter((worker) => worker.connected);
      if ((connected.length === 1 && done(connected[0]!)) || Date.now() > deadline) {
        return workers;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  test("ping reaches the connected worker with a round trip", async () => {
    const workers = await client.inspect.ping({ timeout: 2_000 });
    assert.equal(workers.length, 1, JSON.stringify(workers));
    const worker = workers[0]!;
    assert.equal(worker.answered, true, JSON.stringify(worker));
    assert.equal(typeof worker.roundTripMs, "number");
    assert.ok(worker.roundTripMs! >= 0);
    assert.ok(worker.workerId);
    assert.ok(worker.hostname);
    assert.ok(worker.coordinatorId);
    assert.equal(worker.detail, undefined);
  });

  test("active lists a running task, as a full Task, under its worker", async () => {
    const { taskId } = await client.submit("sleep", { ms: 30_000, ignore_stop: true });
    try {
      assert.equal((await untilState(taskId, "running")).state, "running");
      const workers = await client.inspect.active();
      const holder = workers.find((worker) => worker.tasks.some((task) => task.id === taskId));
      assert.ok(holder, JSON.stringify(workers));
      assert.ok(holder.workerId);
      const task = holder.tasks.find((candidate) => candidate.id === taskId)!;
      assert.equal(task.name, "sleep");
      assert.equal(task.queue, "default");
      assert.equal(task.state, "running");
      assert.equal(task.finished, false);
      // Args are left out unless asked for: a campaign's batches carry their recipients.
      assert.deepEqual(task.args, {});
      const withArgs = await client.inspect.active({ includeArgs: true, limit: 10 });
      const full = withArgs.flatMap((worker) => worker.tasks).find((candidate) => candidate.id === taskId);
      assert.deepEqual(full?.args, { ms: 30_000, ignore_stop: true });
      assert.equal(task.attempt, 1);
      assert.equal(task.rootId, taskId);
      assert.equal(task.workerId, holder.workerId);
      assert.ok(task.startedAt instanceof Date);
      assert.ok(task.createdAt instanceof Date);
      assert.deepEqual(task.failures, []);
      assert.equal(task.progress, undefined, "sleep reports no progress");
    } finally {
      await client.cancel(taskId, { terminate: true });
    }
  });

  test("reserved lists only leased tasks, per worker", async () => {
    // With prefetch 1 the dev worker leases no more than it runs, so reserved is mostly empty;
    // whatever it lists must be leased and not started.
    const workers = await client.inspect.reserved();
    assert.ok(Array.isArray(workers));
    for (const worker of workers) {
      assert.ok(worker.workerId);
      for (const task of worker.tasks) {
        assert.equal(task.state, "leased", JSON.stringify(task));
      }
    }
  });

  test("scheduled lists a task waiting for its countdown, and the seed's schedules", async () => {
    const { taskId } = await client.submit("noop", { later: true }, { countdown: 60_000, queue: "import" });
    try {
      const scheduled = await client.inspect.scheduled({ limit: 100 });
      const task = scheduled.tasks.find((candidate) => candidate.id === taskId);
      assert.ok(task, JSON.stringify(scheduled));
      assert.equal(task.name, "noop");
      assert.equal(task.queue, "import");
      assert.equal(task.state, "scheduled");
      assert.equal(task.finished, false);
      assert.deepEqual(task.args, { later: true });
      assert.ok(task.runAt instanceof Date);
      assert.ok(task.runAt.getTime() > Date.now() + 30_000);

      const names = scheduled.schedules.map((schedule) => schedule.name);
      for (const name of seedSchedules) {
        assert.ok(names.includes(name), `${name} in ${names.join(", ")}`);
      }
      for (const schedule of scheduled.schedules) {
        assert.ok(schedule.task?.name, JSON.stringify(schedule));
        assert.ok(schedule.everyMs !== undefined || schedule.cron !== undefined, JSON.stringify(schedule));
        assert.ok(schedule.nextRunAt instanceof Date || schedule.paused, JSON.stringify(schedule));
      }

      const depths = await client.inspect.queues();
      const importQueue = depths.find((queue) => queue.name === "import");
      assert.ok((importQueue?.tasksByState.scheduled ?? 0) >= 1, JSON.stringify(depths));
    } finally {
      await client.cancel(taskId);
    }
  });

  test("stats describes the dev worker, with counters arriving by heartbeat", async () => {
    const succeeded = await client.submit("noop", { counted: true });
    const failed = await client.submit("fail", { retryable: false });
    assert.equal((await client.get(succeeded.taskId, { wait: 10_000 })).state, "succeeded");
    assert.equal((await client.get(failed.taskId, { wait: 10_000 })).state, "failed");

    const workers = await statsUntil((worker) => (worker.processed.noop ?? 0) >= 1 && (worker.failed.fail ?? 0) >= 1);
    const connected = workers.filter((worker) => worker.connected);
    assert.equal(connected.length, 1, JSON.stringify(workers));
    const worker = connected[0]!;
    assert.ok((worker.processed.noop ?? 0) >= 1, `no noop counted within ${heartbeatWaitMs} ms: ${JSON.stringify(worker)}`);
    assert.ok((worker.processed.fail ?? 0) >= 1, JSON.stringify(worker));
    assert.ok((worker.failed.fail ?? 0) >= 1, JSON.stringify(worker));
    assert.equal(worker.failed.noop, undefined, JSON.stringify(worker));
    assert.equal(worker.concurrency, 4);
    assert.equal(worker.prefetchMultiplier, 1);
    assert.ok(worker.pid > 0);
    assert.ok(worker.hostname);
    assert.ok(worker.version);
    assert.ok(worker.coordinatorId);
    assert.ok(worker.memoryRssBytes > 0);
    assert.ok((worker.uptimeMs ?? 0) > 0);
  });

  test("activeQueues lists the seed's queues and priorities for the dev worker", async () => {
    const workers = await client.inspect.activeQueues();
    const connected = workers.filter((worker) => worker.connected);
    assert.equal(connected.length, 1, JSON.stringify(workers));
    const queues = connected[0]!.queues;
    assert.deepEqual(Object.fromEntries(queues.map((queue) => [queue.name, queue.priority])), seedQueues);
    const priorities = queues.map((queue) => queue.priority);
    assert.deepEqual(priorities, [...priorities].sort((a, b) => b - a), "highest priority first");
  });

  test("registered lists the built-in tasks", async () => {
    const workers = await client.inspect.registered();
    const connected = workers.filter((worker) => worker.connected);
    assert.equal(connected.length, 1, JSON.stringify(workers));
    for (const name of ["noop", "sleep", "fail", "fan_out", "emit_records", "test_celery"]) {
      assert.ok(connected[0]!.taskNames.includes(name), `${name} in ${connected[0]!.taskNames.join(", ")}`);
    }
  });

  test("queues answers every configured queue, highest priority first, with its consumer", async () => {
    const depths = await client.inspect.queues();
    assert.deepEqual(Object.fromEntries(depths.map((queue) => [queue.name, queue.priority])), seedQueues);
    const priorities = depths.map((queue) => queue.priority);
    assert.deepEqual(priorities, [...priorities].sort((a, b) => b - a));
    for (const queue of depths) {
      assert.equal(queue.consumers, 1, JSON.stringify(queue));
      for (const state of Object.keys(queue.tasksByState)) {
        assert.ok(unfinishedStates.includes(state), `${queue.name}: ${state}`);
      }
    }
  });

  test("queues counts pending work and the age of the oldest pending task", async () => {
    // Four sleeps fill the worker's four slots on "import"; the fifth stays pending.
    const submitted = await client.submitMany(
      Array.from({ length: 5 }, () => ({ name: "sleep", args: { ms: 30_000 }, queue: "import" })),
    );
    try {
      let importQueue;
      const deadline = Date.now() + 20_000;
      for (;;) {
        importQueue = (await client.inspect.queues()).find((queue) => queue.name === "import");
        if ((importQueue?.tasksByState.running ?? 0) >= 4 || Date.now() > deadline) {
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(importQueue?.tasksByState.running, 4, JSON.stringify(importQueue));
      assert.equal(importQueue?.tasksByState.pending, 1, JSON.stringify(importQueue));
      assert.equal(typeof importQueue?.oldestPendingAgeMs, "number");
    } finally {
      for (const { taskId } of submitted) {
        await client.cancel(taskId, { terminate: true });
      }
    }
  });
});
