// Listing quiet tasks, requeueing and failing stuck ones, and the close-idle-connections control,
// against a real server.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, FailedPreconditionError, InvalidArgumentError } from "../src";
import { DevServer } from "./support/server";

describe("stuck tasks", () => {
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

  async function until<T>(read: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const value = await read();
      if (value !== undefined) {
        return value;
      }
      assert.ok(Date.now() < deadline, "the condition did not hold in time");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  test("a quiet running task is listed, requeued, and failed", async () => {
    const { taskId } = await client.submit("sleep", { ms: 60_000 });
    const quiet = await until(async () => {
      const tasks = await client.listTasks({ names: ["sleep"], states: ["running"], quietForMs: 300 });
      return tasks.find((task) => task.id === taskId);
    });
    assert.equal(quiet.attempt, 1);
    const inTree = await client.listTasks({ rootId: taskId, states: ["running"] });
    assert.deepEqual(
      inTree.map((task) => task.id),
      [taskId],
    );

    const requeued = await client.requeue(taskId, "no progress", { attempt: 1 });
    assert.equal(requeued.retries, 1);
    assert.equal(requeued.failures[0]?.kind, "requeued");
    assert.equal(requeued.failures[0]?.message, "no progress");
    await until(async () => ((await client.get(taskId)).attempt === 2 ? true : undefined));

    await assert.rejects(client.fail(taskId, "late", { attempt: 1 }), FailedPreconditionError);
    const failed = await client.fail(taskId, "given up");
    assert.equal(failed.state, "failed");
    assert.equal(failed.error?.kind, "failed_by_request");
  });

  test("bad requests name the field", async () => {
    await assert.rejects(client.listTasks({ states: ["stuck" as "running"] }), /states\[0\]/);
    await assert.rejects(client.requeue(crypto.randomUUID(), " "), (error: unknown) => {
      assert.ok(error instanceof InvalidArgumentError);
      assert.equal(error.field, "reason");
      return true;
    });
  });

  test("closeIdleConnections reaches the dev worker", async () => {
    const answers = await client.inspect.closeIdleConnections({ queue: "email", timeout: 5_000 });
    assert.equal(answers.length, 1);
    assert.equal(answers[0]?.answered, true);
    assert.match(answers[0]?.detail ?? "", /^closed 0 idle SMTP connection\(s\)/);
  });
});
