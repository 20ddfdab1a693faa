// Following task trees with streamProgress: order, resumption, errors, early exits, and a
// coordinator restarted under a running stream.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { Client, FailedPreconditionError, InvalidArgumentError, type ProgressEvent } from "../src";
import { recordCalls } from "./support/calls";
import { DevServer } from "./support/server";

async function collect(events: AsyncIterable<ProgressEvent>): Promise<ProgressEvent[]> {
  const collected: ProgressEvent[] = [];
  for await (const event of events) {
    collected.push(event);
  }
  return collected;
}

/** Every event once, in order, and the last one says the tree finished. */
function assertCompleteStream(events: ProgressEvent[], firstSequence = 1): void {
  assert.ok(events.length > 0, "the stream yielded events");
  assert.deepEqual(
    events.map((event) => event.sequence),
    events.map((_, index) => firstSequence + index),
    "sequences follow one another with no gap and no repeat",
  );
  const last = events.at(-1)!;
  assert.equal(last.change.type, "treeFinished");
  assert.equal(last.aggregate.tasksFinished, last.aggregate.tasksTotal);
}

describe("streamProgress", () => {
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

  test("streams a fan-out's tree to its end, with the aggregate on every event", async () => {
    const { taskId } = await client.submit("fan_out", { task: "noop", count: 20, callback: { task: "noop" } });
    const events = await collect(client.streamProgress(taskId));
    assertCompleteStream(events);
    for (const event of events) {
      assert.equal(event.rootId, taskId);
      assert.ok(event.at instanceof Date);
    }
    const first = events[0]!;
    assert.equal(first.change.type, "stateChanged");
    const last = events.at(-1)!;
    assert.deepEqual(last.change, { type: "treeFinished", rootState: "succeeded" });
    // The root, 20 children and the callback.
    assert.equal(last.aggregate.tasksTotal, 22);
    assert.deepEqual(last.aggregate.tasksByState, { succeeded: 22 });
    assert.equal(last.aggregate.progress.done, 20);
    const submittedInUpdates = events
      .map((event) => (event.change.type === "treeUpdated" ? event.change.tasksSubmitted : 0))
      .reduce((sum, count) => sum + count, 0);
    assert.equal(submittedInUpdates, 21);
  });

  test("fromSequence resumes after the given event", async () => {
    const { taskId } = await client.submit("fan_out", { task: "noop", count: 5 });
    const all = await collect(client.streamProgress(taskId));
    assert.ok(all.length >= 3, `${all.length} events`);
    const resumed = await collect(client.streamProgress(taskId, { fromSequence: 2 }));
    assert.deepEqual(resumed, all.slice(2));
  });

  test("a task that is not a root is refused, naming the root", async () => {
    const { taskId: rootId } = await client.submit("fan_out", { task: "noop", count: 2 });
    await collect(client.streamProgress(rootId));
    const child = await client.submit("noop", {}, { parentId: rootId });
    await assert.rejects(collect(client.streamProgress(child.taskId)), (error: unknown) => {
      assert.ok(error instanceof FailedPreconditionError);
      assert.ok(error.message.includes(rootId), error.message);
      return true;
    });
  });

  test("fromSequence past the end is InvalidArgumentError", async () => {
    const { taskId } = await client.submit("noop");
    const events = await collect(client.streamProgress(taskId));
    assertCompleteStream(events);
    await assert.rejects(
      collect(client.streamProgress(taskId, { fromSequence: events.length + 5 })),
      InvalidArgumentError,
    );
  });

  test("leaving the loop early cancels the call", async () => {
    const { interceptor, calls } = recordCalls();
    const watched = new Client(server.url, { interceptors: [interceptor] });
    const { taskId } = await watched.submit("sleep", { ms: 5_000 });
    try {
      const seen: ProgressEvent[] = [];
      for await (const event of watched.streamProgress(taskId)) {
        seen.push(event);
        break;
      }
      assert.equal(seen.length, 1);
      const stream = calls.find((call) => call.path.endsWith("/StreamProgress"));
      assert.equal((await stream?.ended)?.code, status.CANCELLED);
    } finally {
      await watched.cancel(taskId, { terminate: true });
      watched.close();
    }
  });

  test("an abort signal stops a quiet stream at once", async () => {
    const { taskId } = await client.submit("sleep", { ms: 30_000, ignore_stop: true });
    const controller = new AbortController();
    const events: ProgressEvent[] = [];
    const started = Date.now();
    const following = (async () => {
      for await (const event of client.streamProgress(taskId, { signal: controller.signal })) {
        events.push(event);
        if (event.change.type === "stateChanged" && event.change.state === "running") {
          setTimeout(() => controller.abort(), 100);
        }
      }
    })();
    await assert.rejects(following, { name: "AbortError" });
    assert.ok(Date.now() - started < 10_000, "the abort did not wait for the task");
    assert.ok(events.length >= 1);
    await client.cancel(taskId, { terminate: true });
  });
});

describe("streamProgress across a coordinator restart", () => {
  // Fast lease settings, so the tasks a killed server held are handed out again within seconds.
  const env = {
    CELERITAS_COORDINATOR__HEARTBEAT_INTERVAL: "1s",
    CELERITAS_COORDINATOR__LEASE_TTL: "3s",
    CELERITAS_COORDINATOR__LEASE_GRACE: "1s",
    CELERITAS_COORDINATOR__REAP_INTERVAL: "200ms",
  };

  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    test(`resumes after the last event when the server is stopped with ${signal} and started again`, async () => {
      const server = await DevServer.start({ env });
      const { interceptor, calls } = recordCalls();
      const client = new Client(server.url, { interceptors: [interceptor] });
      try {
        const children = Array.from({ length: 12 }, () => ({ ms: 600 }));
        const { taskId } = await client.submit("fan_out", { task: "sleep", args: children });
        const events: ProgressEvent[] = [];
        let restart: Promise<void> | undefined;
        for await (const event of client.streamProgress(taskId)) {
          events.push(event);
          if (restart === undefined && event.aggregate.tasksTotal > 1) {
            restart = (async () => {
              await server.stop(signal);
              await new Promise((resolve) => setTimeout(resolve, 500));
              await server.start();
            })();
          }
        }
        await restart;
        assert.ok(restart !== undefined, "the server was restarted during the stream");
        const streams = calls.filter((call) => call.path.endsWith("/StreamProgress"));
        assert.ok(streams.length >= 2, `the stream was opened again (${streams.length} calls)`);
        assert.equal((await streams[0]!.ended).code, status.UNAVAILABLE);
        assert.ok(
          [status.OK, status.CANCELLED].includes((await streams.at(-1)!.ended).code),
          "the last call ends with the tree",
        );
        assertCompleteStream(events);
        assert.equal(events.at(-1)!.aggregate.tasksTotal, 13);
        assert.deepEqual(events.at(-1)!.change, { type: "treeFinished", rootState: "succeeded" });
      } finally {
        client.close();
        await server.dispose();
      }
    });
  }
});
