// Submitting, reading, cancelling and purging tasks, errors and metadata, against a real server.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import {
  Client,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  type Task,
} from "../src";
import { recordCalls } from "./support/calls";
import { DevServer } from "./support/server";

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe("tasks", () => {
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

  /** Reads the task until it is in one of `states` (the server moves it along on its own). */
  async function untilState(taskId: string, states: string[]): Promise<Task> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const task = await client.get(taskId, { wait: 200 });
      if (states.includes(task.state) || Date.now() > deadline) {
        return task;
      }
    }
  }

  test("submit runs a task and get with wait returns its result", async () => {
    const submitted = await client.submit("noop", { campaign: 42, tags: ["a", "b"] });
    assert.match(submitted.taskId, uuidPattern);
    assert.equal(submitted.created, true);

    const task = await client.get(submitted.taskId, { wait: 10_000 });
    assert.equal(task.state, "succeeded");
    assert.equal(task.finished, true);
    assert.deepEqual(task.args, { campaign: 42, tags: ["a", "b"] });
    assert.deepEqual(task.result, { campaign: 42, tags: ["a", "b"] });
    assert.equal(task.id, submitted.taskId);
    assert.equal(task.rootId, submitted.taskId);
    assert.equal(task.parentId, undefined);
    assert.equal(task.name, "noop");
    assert.equal(task.queue, "default");
    assert.equal(task.attempt, 1);
    assert.ok(task.createdAt instanceof Date);
    assert.ok(task.finishedAt instanceof Date);
    assert.ok(task.workerId);
    assert.deepEqual(task.failures, []);
  });

  test("submit sends a generated idempotency key when none is given", async () => {
    const { taskId } = await client.submit("noop");
    const task = await client.get(taskId);
    assert.match(task.idempotencyKey ?? "", uuidPattern);
    assert.deepEqual(task.args, {});
  });

  test("a repeated idempotency key returns the first task and creates nothing", async () => {
    const first = await client.submit("noop", { n: 1 }, { idempotencyKey: "node-client-once" });
    const second = await client.submit("noop", { n: 2 }, { idempotencyKey: "node-client-once" });
    assert.equal(second.taskId, first.taskId);
    assert.equal(first.created, true);
    assert.equal(second.created, false);
    assert.deepEqual((await client.get(first.taskId)).args, { n: 1 });
  });

  test("submit passes queue, priority, countdown and retries through", async () => {
    const { taskId } = await client.submit(
      "noop",
      {},
      { queue: "email", priority: 7, countdown: 60_000, maxRetries: 9, expiresIn: 120_000 },
    );
    const task = await client.get(taskId);
    assert.equal(task.queue, "email");
    assert.equal(task.priority, 7);
    assert.equal(task.maxRetries, 9);
    assert.equal(task.state, "scheduled");
    const delayMs = task.runAt!.getTime() - task.createdAt!.getTime();
    assert.ok(Math.abs(delayMs - 60_000) < 1_000, `runAt is ${delayMs} ms after createdAt`);
    assert.ok(task.expiresAt!.getTime() - task.createdAt!.getTime() >= 119_000);
    await client.cancel(taskId);
  });

  test("submitMany accepts a batch and answers in order", async () => {
    const submitted = await client.submitMany([
      { name: "noop", args: { index: 0 } },
      { name: "noop", args: { index: 1 }, queue: "import" },
      { name: "noop", args: { index: 2 }, idempotencyKey: "node-client-batch-2" },
    ]);
    assert.equal(submitted.length, 3);
    for (const [index, { taskId, created }] of submitted.entries()) {
      assert.equal(created, true);
      const task = await client.get(taskId, { wait: 10_000 });
      assert.equal(task.state, "succeeded");
      assert.deepEqual(task.result, { index });
    }
    assert.equal((await client.get(submitted[1]!.taskId)).queue, "import");
  });

  test("a batch with one bad spec is refused whole, naming the spec", async () => {
    const key = "node-client-refused-batch-0";
    await assert.rejects(
      client.submitMany([
        { name: "noop", idempotencyKey: key },
        { name: "noop", queue: "mail" },
      ]),
      (error: unknown) => {
        assert.ok(error instanceof InvalidArgumentError);
        assert.equal(error.field, "tasks[1].queue");
        return true;
      },
    );
    // Nothing of the batch was accepted: the key of its first spec is still free.
    const again = await client.submit("noop", {}, { idempotencyKey: key });
    assert.equal(again.created, true);
  });

  test("invalid input becomes InvalidArgumentError with the code, message and field", async () => {
    await assert.rejects(client.submit("noop", {}, { queue: "mail" }), (error: unknown) => {
      assert.ok(error instanceof InvalidArgumentError);
      assert.equal(error.code, status.INVALID_ARGUMENT);
      assert.equal(error.codeName, "INVALID_ARGUMENT");
      assert.equal(error.field, "task.queue");
      assert.match(error.message, /^task\.queue: unknown queue "mail"/);
      assert.equal(error.details, error.message);
      return true;
    });
    await assert.rejects(client.get("not-a-uuid"), (error: unknown) => {
      assert.ok(error instanceof InvalidArgumentError);
      assert.equal(error.field, "task_id");
      return true;
    });
  });

  test("an unknown task is NotFoundError", async () => {
    await assert.rejects(client.get("6f1c1a5e-1111-4111-8111-111111111111"), (error: unknown) => {
      assert.ok(error instanceof NotFoundError);
      assert.equal(error.code, status.NOT_FOUND);
      return true;
    });
  });

  test("args that are not JSON are refused before anything is sent", async () => {
    await assert.rejects(client.submit("noop", { big: 1n }), TypeError);
  });

  test("get with a short wait answers an unfinished task", async () => {
    const { taskId } = await client.submit("sleep", { ms: 3_000 });
    const started = Date.now();
    const task = await client.get(taskId, { wait: 300 });
    assert.ok(Date.now() - started >= 250, "the wait was honoured");
    assert.equal(task.finished, false);
    assert.ok(["pending", "leased", "running"].includes(task.state), task.state);
    await client.cancel(taskId, { terminate: true });
  });

  test("a task carries its last progress report", async () => {
    const { taskId } = await client.submit("emit_records", { count: 5 });
    const task = await client.get(taskId, { wait: 10_000 });
    assert.equal(task.state, "succeeded");
    assert.deepEqual(task.progress, { done: 5, total: 5, message: "records emitted" });

    const { taskId: silentId } = await client.submit("noop");
    const silent = await client.get(silentId, { wait: 10_000 });
    assert.equal(silent.state, "succeeded");
    assert.equal(silent.progress, undefined, "a task that reported nothing has no progress");
  });

  test("a callback is waiting, unfinished, while its parent's children run", async () => {
    const { taskId: rootId } = await client.submit("fan_out", {
      task: "sleep",
      args: [{ ms: 3_000 }],
      callback: { task: "noop" },
    });
    const root = await client.get(rootId, { wait: 10_000 });
    assert.equal(root.state, "succeeded", JSON.stringify(root));
    const callbackId = (root.result as { callback: string }).callback;
    const waiting = await client.get(callbackId);
    assert.equal(waiting.state, "waiting", JSON.stringify(waiting));
    assert.equal(waiting.finished, false);
    assert.equal(waiting.parentId, rootId);

    const ran = await client.get(callbackId, { wait: 20_000 });
    assert.equal(ran.state, "succeeded");
  });

  test("cancel stops a scheduled task before it starts", async () => {
    const { taskId } = await client.submit("noop", {}, { countdown: 60_000 });
    const cancelled = await client.cancel(taskId);
    assert.equal(cancelled.state, "cancelled");
    assert.equal(cancelled.finished, true);
    assert.equal((await client.get(taskId)).state, "cancelled");
  });

  test("cancel with terminate aborts a running task", async () => {
    const { taskId } = await client.submit("sleep", { ms: 30_000, ignore_stop: true });
    assert.equal((await untilState(taskId, ["running"])).state, "running");
    await client.cancel(taskId, { terminate: true });
    const task = await client.get(taskId, { wait: 10_000 });
    assert.equal(task.state, "cancelled");
  });

  test("failed attempts are retried and kept; a permanent failure fails the task", async () => {
    const retried = await client.submit("fail", { times: 1, retryable: true }, { maxRetries: 2 });
    const succeeded = await client.get(retried.taskId, { wait: 20_000 });
    assert.equal(succeeded.state, "succeeded");
    assert.equal(succeeded.retries, 1);
    assert.equal(succeeded.failures.length, 1);
    assert.equal(succeeded.failures[0]!.kind, "requested_failure");
    assert.equal(succeeded.failures[0]!.attempt, 1);

    const permanent = await client.submit("fail", { retryable: false, kind: "bad_input", message: "no" });
    const failed = await client.get(permanent.taskId, { wait: 20_000 });
    assert.equal(failed.state, "failed");
    assert.deepEqual(failed.error, { kind: "bad_input", message: "no" });
    assert.equal(failed.result, undefined);
  });

  test("purge cancels a queue's waiting tasks and answers how many", async () => {
    const submitted = await client.submitMany(
      [0, 1, 2].map((index) => ({ name: "noop", args: { index }, queue: "campaigns", countdown: 60_000 })),
    );
    assert.equal(await client.purge("campaigns"), 3);
    for (const { taskId } of submitted) {
      assert.equal((await client.get(taskId)).state, "cancelled");
    }
    assert.equal(await client.purge("campaigns"), 0);
  });

  test("health answers SERVING", async () => {
    assert.equal(await client.health(), "SERVING");
    assert.equal(await client.health({ service: "celeritas.v1.TaskService" }), "SERVING");
  });

  test("the token travels as authorization: Bearer metadata on every call", async () => {
    const { interceptor, calls } = recordCalls();
    const withToken = new Client(server.url, { token: "s3cret", interceptors: [interceptor] });
    try {
      const { taskId } = await withToken.submit("noop");
      await withToken.get(taskId, { wait: 5_000 });
      await withToken.health();
      for await (const event of withToken.streamProgress(taskId)) {
        assert.ok(event.sequence > 0);
      }
    } finally {
      withToken.close();
    }
    assert.deepEqual(
      calls.map((call) => [call.path, call.metadata.get("authorization")]),
      [
        ["/celeritas.v1.TaskService/SubmitTask", ["Bearer s3cret"]],
        ["/celeritas.v1.TaskService/GetTask", ["Bearer s3cret"]],
        ["/grpc.health.v1.Health/Check", ["Bearer s3cret"]],
        ["/celeritas.v1.TaskService/StreamProgress", ["Bearer s3cret"]],
      ],
    );
  });

  test("without a token no authorization metadata is sent", async () => {
    const { interceptor, calls } = recordCalls();
    const anonymous = new Client(server.url, { interceptors: [interceptor] });
    try {
      await anonymous.health();
    } finally {
      anonymous.close();
    }
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0]!.metadata.get("authorization"), []);
  });

  // A root that fans out finishes once it has submitted its children: waiting for it is not
  // waiting for its tree.
  test("get with wait answers when the root finishes, while its children still run", async () => {
    const { taskId } = await client.submit("fan_out", { task: "sleep", args: [{ ms: 60_000 }, { ms: 60_000 }] });
    try {
      const root = await client.get(taskId, { wait: 20_000 });
      assert.equal(root.state, "succeeded");
      assert.equal((await client.listTasks({ rootId: taskId })).length, 2, "the children still run");

      await assert.rejects(client.get(taskId, { wait: 500, tree: true }), (error: unknown) => {
        assert.ok(error instanceof DeadlineExceededError, String(error));
        assert.match(error.message, /the tree of task .* had not finished after 500 ms/);
        return true;
      });
    } finally {
      await client.cancel(taskId, { terminate: true });
    }
  });

  test("get with tree answers once every child and the callback finished", async () => {
    const { taskId } = await client.submit("fan_out", {
      task: "sleep",
      args: [{ ms: 300 }, { ms: 300 }, { ms: 300 }],
      callback: { task: "noop", args: { n: 1 } },
    });

    const root = await client.get(taskId, { wait: 30_000, tree: true });

    assert.equal(root.state, "succeeded");
    assert.equal((root.result as { children: number }).children, 3);
    assert.deepEqual(await client.listTasks({ rootId: taskId }), [], "nothing of the tree is unfinished");
    const tree = await client.listTasks({ rootId: taskId, states: ["succeeded"] });
    assert.deepEqual(tree.map((task) => task.name).sort(), ["fan_out", "noop", "sleep", "sleep", "sleep"]);
    // Without a wait, tree waits as long as it takes; this tree is done already.
    assert.equal((await client.get(taskId, { tree: true })).state, "succeeded");
  });

  test("get with tree on a child throws FailedPreconditionError naming its root", async () => {
    const { taskId } = await client.submit("fan_out", { task: "noop", count: 1 });
    await client.get(taskId, { wait: 20_000, tree: true });
    const [child] = (await client.listTasks({ rootId: taskId, states: ["succeeded"], names: ["noop"] }));

    await assert.rejects(client.get(child!.id, { wait: 5_000, tree: true }), (error: unknown) => {
      assert.ok(error instanceof FailedPreconditionError, String(error));
      assert.ok(error.message.includes(taskId), error.message);
      return true;
    });
  });
});
