// client.schedules: periodic schedules through the coordinator's ScheduleService.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, InvalidArgumentError, NotFoundError, type Schedule } from "../src";
import { DevServer } from "./support/server";

describe("schedules", () => {
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

  /** Lists the schedule until `done` holds for it (the beat loop ticks within a second), or 20 s pass. */
  async function untilSchedule(name: string, done: (schedule: Schedule) => boolean): Promise<Schedule | undefined> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const schedule = (await client.schedules.list()).find((candidate) => candidate.name === name);
      if ((schedule !== undefined && done(schedule)) || Date.now() > deadline) {
        return schedule;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  test("list answers the seed's schedules", async () => {
    const names = (await client.schedules.list()).map((schedule) => schedule.name);
    for (const name of ["cleanup_smtp_connections", "cleanup_stuck_campaigns", "monitor_campaign_progress"]) {
      assert.ok(names.includes(name), `${name} in ${names.join(", ")}`);
    }
  });

  test("put creates a schedule that ticks, pause and resume toggle it, delete removes it", async () => {
    const put = await client.schedules.put({
      name: "node-client-every-second",
      task: { name: "noop", args: { tick: true }, queue: "import", priority: 3 },
      everyMs: 1_000,
    });
    assert.equal(put.name, "node-client-every-second");
    assert.equal(put.everyMs, 1_000);
    assert.equal(put.cron, undefined);
    assert.equal(put.timezone, "UTC");
    assert.equal(put.paused, false);
    assert.ok(put.nextRunAt instanceof Date);
    assert.deepEqual(put.task, {
      name: "noop",
      args: { tick: true },
      queue: "import",
      priority: 3,
      maxRetries: undefined,
      softTimeLimit: undefined,
      hardTimeLimit: undefined,
    });

    const ticked = await untilSchedule(put.name, (schedule) => schedule.lastTaskId !== undefined);
    assert.ok(ticked?.lastTaskId, JSON.stringify(ticked));
    assert.ok(ticked.lastRunAt instanceof Date);
    const task = await client.get(ticked.lastTaskId, { wait: 10_000 });
    assert.equal(task.name, "noop");
    assert.equal(task.queue, "import");
    assert.deepEqual(task.result, { tick: true });
    // Each tick makes a new task: nothing (no idempotency key) ties it to the previous one.
    const next = await untilSchedule(put.name, (schedule) => schedule.lastTaskId !== ticked.lastTaskId);
    assert.notEqual(next?.lastTaskId, ticked.lastTaskId, JSON.stringify(next));

    const paused = await client.schedules.pause(put.name);
    assert.equal(paused.paused, true);
    const resumed = await client.schedules.resume(put.name);
    assert.equal(resumed.paused, false);
    assert.ok(resumed.nextRunAt instanceof Date);

    await client.schedules.delete(put.name);
    const names = (await client.schedules.list()).map((schedule) => schedule.name);
    assert.ok(!names.includes(put.name), names.join(", "));
    await assert.rejects(client.schedules.delete(put.name), NotFoundError);
    await assert.rejects(client.schedules.pause(put.name), NotFoundError);
  });

  test("put replaces a schedule of the same name; cron schedules keep their time zone", async () => {
    const definition = {
      name: "node-client-nightly",
      task: { name: "noop" },
      cron: "0 3 * * *",
      timezone: "Europe/Moscow",
      paused: true,
    };
    const first = await client.schedules.put(definition);
    assert.equal(first.cron, "0 3 * * *");
    assert.equal(first.everyMs, undefined);
    assert.equal(first.timezone, "Europe/Moscow");
    assert.equal(first.paused, true);
    assert.deepEqual(first.task?.args, {});

    const replaced = await client.schedules.put({ ...definition, cron: "30 4 * * 1" });
    assert.equal(replaced.cron, "30 4 * * 1");
    const listed = (await client.schedules.list()).filter((schedule) => schedule.name === definition.name);
    assert.equal(listed.length, 1);
    assert.equal(listed[0]!.cron, "30 4 * * 1");
    await client.schedules.delete(definition.name);
  });

  test("a definition the server refuses is InvalidArgumentError naming the field", async () => {
    await assert.rejects(
      client.schedules.put({ name: "node-client-bad-cron", task: { name: "noop" }, cron: "not a cron" }),
      (error: unknown) => {
        assert.ok(error instanceof InvalidArgumentError, String(error));
        assert.equal(error.field, "schedule.cron");
        return true;
      },
    );
    await assert.rejects(
      client.schedules.put({ name: "node-client-no-timing", task: { name: "noop" } }),
      (error: unknown) => {
        assert.ok(error instanceof InvalidArgumentError, String(error));
        assert.equal(error.field, "schedule.timing");
        return true;
      },
    );
  });

  test("a definition with both everyMs and cron is refused before anything is sent", async () => {
    await assert.rejects(
      client.schedules.put({ name: "node-client-both", task: { name: "noop" }, everyMs: 1_000, cron: "* * * * *" }),
      TypeError,
    );
  });
});
