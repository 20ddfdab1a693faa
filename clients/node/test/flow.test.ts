// Flow control against a real server: pausing and resuming queues, and retrying and cancelling
// tasks in bulk by selector (PauseQueue, ResumeQueue, RetryTasks, CancelTasks).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, FailedPreconditionError, InvalidArgumentError, NotFoundError, type QueueDepth } from "../src";
import { DevServer } from "./support/server";

// Names no worker registers: their tasks stay pending (unserved) until cancelled.
const unserved = "flow.nobody_runs_it";
const otherUnserved = "flow.nobody_runs_this_either";

describe("flow control", () => {
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

  async function depth(queue: string): Promise<QueueDepth> {
    const found = (await client.inspect.queues()).find((entry) => entry.name === queue);
    assert.ok(found, `no queue ${queue}`);
    return found;
  }

  async function finished(taskId: string): Promise<Awaited<ReturnType<Client["get"]>>> {
    const task = await client.get(taskId, { wait: 30_000 });
    assert.ok(task.finished, `task ${taskId} is still ${task.state}`);
    return task;
  }

  test("a paused queue holds its tasks until it is resumed", async () => {
    const beforePause = Date.now();
    assert.equal(await client.pauseQueue("import"), true);
    const afterPause = Date.now();
    let held: string[] = [];
    try {
      assert.equal(await client.pauseQueue("import"), false, "pausing a paused queue changes nothing");
      held = (
        await client.submitMany([0, 1, 2].map((n) => ({ name: "noop", args: { n }, queue: "import" })))
      ).map((submitted) => submitted.taskId);
      // The sync point: a task submitted later, on a queue of lower priority, runs to the end. Had
      // the pause not held, the dev worker would have leased the import tasks first.
      const other = await client.submit("noop", { other: true }, { queue: "default" });
      const otherTask = await finished(other.taskId);
      assert.equal(otherTask.state, "succeeded");
      for (const taskId of held) {
        assert.equal((await client.get(taskId)).state, "pending");
      }

      const importDepth = await depth("import");
      assert.ok(importDepth.pausedAt instanceof Date);
      const pausedAt = importDepth.pausedAt.getTime();
      assert.ok(pausedAt >= beforePause - 1000 && pausedAt <= afterPause + 1000, `paused at ${importDepth.pausedAt.toISOString()}`);
      assert.equal(importDepth.tasksByState.pending, 3);
      assert.equal((await depth("default")).pausedAt, undefined);
    } finally {
      assert.equal(await client.resumeQueue("import"), true);
    }
    assert.equal(await client.resumeQueue("import"), false, "resuming a running queue changes nothing");
    for (const [n, taskId] of held.entries()) {
      const task = await finished(taskId);
      assert.equal(task.state, "succeeded");
      assert.deepEqual(task.result, { n });
    }
    assert.equal((await depth("import")).pausedAt, undefined);
  });

  test("failed tasks are retried in bulk after a dry run", async () => {
    const started = new Date();
    const failing: string[] = [];
    for (const n of [0, 1, 2]) {
      failing.push((await client.submit("fail", { retryable: false, kind: "flow_bulk", message: `no ${n}` })).taskId);
    }
    // Failed too, but of another kind: the selector leaves it alone.
    const other = (await client.submit("fail", { retryable: false, kind: "flow_other" })).taskId;
    for (const taskId of [...failing, other]) {
      assert.equal((await finished(taskId)).state, "failed");
    }

    const selector = { names: ["fail"], errorKinds: ["flow_bulk"] };
    assert.deepEqual(await client.retryTasks(selector, { dryRun: true }), { matched: 3, changed: 0 });
    for (const taskId of failing) {
      assert.equal((await client.get(taskId)).state, "failed");
    }
    // The moments travel: nothing was created after an hour from now, and a dry run of no match
    // answers a count of 0 instead of throwing NotFoundError.
    const later = new Date(started.getTime() + 3_600_000);
    assert.deepEqual(await client.retryTasks({ names: ["fail"], createdAfter: later }, { dryRun: true }), {
      matched: 0,
      changed: 0,
    });
    const window = { errorKinds: ["flow_bulk"], createdAfter: new Date(started.getTime() - 1000) };
    assert.equal((await client.retryTasks(window, { dryRun: true })).matched, 3);

    assert.deepEqual(await client.retryTasks(selector), { matched: 3, changed: 3 });
    // `fail` fails whenever it runs: each retried task ran once more and failed again, its first
    // failure kept in its history.
    for (const taskId of failing) {
      const task = await finished(taskId);
      assert.equal(task.state, "failed");
      assert.equal(task.attempt, 2);
      assert.deepEqual(
        task.failures.map((failure) => failure.kind),
        ["flow_bulk", "flow_bulk"],
      );
    }
    const untouched = await client.get(other);
    assert.equal(untouched.state, "failed");
    assert.equal(untouched.attempt, 1);
  });

  test("pending tasks are cancelled in bulk by name after a dry run", async () => {
    const waiting = (
      await client.submitMany([0, 1, 2, 3].map((n) => ({ name: unserved, args: { n }, queue: "default" })))
    ).map((submitted) => submitted.taskId);
    const decoy = (await client.submit(otherUnserved, {}, { queue: "default" })).taskId;
    for (const taskId of [...waiting, decoy]) {
      assert.equal((await client.get(taskId)).state, "pending");
    }

    assert.deepEqual(await client.cancelTasks({ names: [unserved] }, { dryRun: true }), { matched: 4, changed: 0 });
    for (const taskId of waiting) {
      assert.equal((await client.get(taskId)).state, "pending");
    }
    const cancelled = await client.cancelTasks({ names: [unserved], states: ["pending"], queues: ["default"] });
    assert.deepEqual(cancelled, { matched: 4, changed: 4 });
    for (const taskId of waiting) {
      assert.equal((await client.get(taskId)).state, "cancelled");
    }
    assert.equal((await client.get(decoy)).state, "pending");
    await assert.rejects(client.cancelTasks({ names: [unserved] }), NotFoundError);
    assert.deepEqual(await client.cancelTasks({ names: [otherUnserved] }, { terminate: true }), {
      matched: 1,
      changed: 1,
    });
  });

  test("a tree is paused and resumed, and its group and limit are kept", async () => {
    // A tree that stays unfinished: two children no worker runs.
    const root = (await client.submit("fan_out", { task: unserved, args: [{}, {}], queue: "default" }, { groupKey: "customer:7" })).taskId;
    // Its root succeeds once it has submitted them: from then on the tree is what it will be.
    assert.equal((await finished(root)).state, "succeeded");
    try {
      const pause = await client.pauseTree(root);
      assert.equal(pause.changed, true);
      assert.ok(pause.pausedAt instanceof Date);
      assert.equal((await client.pauseTree(root)).changed, false, "pausing a paused tree changes nothing");
      const shown = await client.get(root);
      assert.equal(shown.treePausedAt?.getTime(), pause.pausedAt.getTime());
      assert.equal(shown.groupKey, "customer:7");
      assert.equal(pause.stopping, 0, "nothing of the tree was running");
      assert.equal(await client.resumeTree(root), true);
      assert.equal(await client.resumeTree(root), false, "resuming a running tree changes nothing");
      assert.equal((await client.get(root)).treePausedAt, undefined);
    } finally {
      // fan_out's root finished when it submitted the children; they are what is left.
      await client.cancelTasks({ rootId: root });
    }
    await client.get(root, { tree: true, wait: 30_000 });
    await assert.rejects(client.pauseTree(root), FailedPreconditionError, "a finished tree cannot be paused");

    const limited = (await client.submit("noop", { limited: true }, { groupKey: "g", maxConcurrency: 2 })).taskId;
    const task = await finished(limited);
    assert.equal(task.state, "succeeded");
    assert.equal(task.maxConcurrency, 2);
    assert.equal(task.groupKey, "g");
    assert.deepEqual(task.rateKeys, {});
  });

  test("rate limits are set, listed and cleared", async () => {
    assert.deepEqual(await client.setRateLimit("domain:*.flow.test", "20/s"), { previous: undefined, governed: 0 });
    assert.equal((await client.setRateLimit("domain:*.flow.test", "30/m")).previous, "20/s");
    const rule = (await client.inspect.rateLimits()).limits.find((entry) => entry.pattern === "domain:*.flow.test");
    assert.ok(rule, "the limit is listed");
    assert.equal(rule.source, "api");
    assert.equal(rule.perSecond, 0.5);
    assert.ok(rule.setAt instanceof Date);
    assert.equal(await client.clearRateLimit("domain:*.flow.test"), "30/m");
    const after = (await client.inspect.rateLimits()).limits;
    assert.ok(after.every((entry) => entry.pattern !== "domain:*.flow.test"));
    await assert.rejects(client.clearRateLimit("domain:*.flow.test"), NotFoundError);
  });

  test("bad flow requests name the field", async () => {
    const invalid = (field: string | RegExp) => (error: unknown) => {
      assert.ok(error instanceof InvalidArgumentError, `not an InvalidArgumentError: ${String(error)}`);
      if (typeof field === "string") {
        assert.equal(error.field, field);
      } else {
        assert.match(error.field ?? "", field);
      }
      return true;
    };
    await assert.rejects(client.pauseQueue("mail"), invalid("queue"));
    await assert.rejects(client.resumeQueue("mail"), invalid("queue"));
    await assert.rejects(client.retryTasks({}), invalid("selector"));
    await assert.rejects(client.cancelTasks({}, { dryRun: true }), invalid("selector"));
    await assert.rejects(client.cancelTasks({ names: [unserved], states: ["succeeded"] }), invalid("selector.states"));
    await assert.rejects(client.retryTasks({ queues: ["mail"] }), invalid(/^selector\.queues/));
    await assert.rejects(client.retryTasks({ names: ["flow.never_submitted"] }), NotFoundError);
    await assert.rejects(client.cancelTasks({ names: ["flow.never_submitted"] }), NotFoundError);
    await assert.rejects(client.pauseTree("00000000-0000-4000-8000-000000000000"), NotFoundError);
    await assert.rejects(client.submit("noop", {}, { groupKey: "x".repeat(201) }), invalid("task.group_key"));
    await assert.rejects(client.submit("noop", {}, { maxConcurrency: 0 }), invalid("task.max_concurrency"));
    await assert.rejects(client.setRateLimit("domain:x.flow.test", "ten per second"), invalid("rate"));
    await assert.rejects(client.setRateLimit("", "5/s"), invalid("key"));

    // Refused before anything is sent.
    await assert.rejects(
      client.cancelTasks({ names: [unserved], states: ["stuck" as "pending"] }),
      /selector\.states\[0\]/,
    );
    await assert.rejects(client.retryTasks({ names: ["fail"], createdAfter: new Date(Number.NaN) }), {
      name: "TypeError",
      message: /selector\.createdAfter/,
    });
  });
});
