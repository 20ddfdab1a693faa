// Retries on UNAVAILABLE, against a coordinator that is not there yet or not at all.

import assert from "node:assert/strict";
import { test } from "node:test";
import { status } from "@grpc/grpc-js";
import { Client, UnavailableError } from "../src";
import { DevServer, freePort } from "./support/server";

test("a call to a coordinator that never comes gives up with UnavailableError after its tries", async () => {
  const port = await freePort();
  const client = new Client(`http://127.0.0.1:${port}`, {
    retry: { maxAttempts: 4, initialBackoffMs: 200, maxBackoffMs: 1_000 },
  });
  try {
    const started = Date.now();
    await assert.rejects(client.get("6f1c1a5e-1111-4111-8111-111111111111"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError);
      assert.equal(error.code, status.UNAVAILABLE);
      return true;
    });
    // Three backoffs, each at least half its nominal 200, 400 and 800 ms.
    assert.ok(Date.now() - started >= 700, `gave up after ${Date.now() - started} ms`);
  } finally {
    client.close();
  }
});

test("health is asked once: an unreachable coordinator answers UnavailableError at once", async () => {
  const client = new Client(`http://127.0.0.1:${await freePort()}`, {
    retry: { maxAttempts: 8, initialBackoffMs: 1_000 },
  });
  try {
    const started = Date.now();
    await assert.rejects(client.health(), UnavailableError);
    assert.ok(Date.now() - started < 900, `took ${Date.now() - started} ms`);
  } finally {
    client.close();
  }
});

test("a submit made before the coordinator listens is retried until it lands", async () => {
  const port = await freePort();
  const client = new Client(`http://127.0.0.1:${port}`, {
    retry: { maxAttempts: 12, initialBackoffMs: 200, maxBackoffMs: 1_000 },
  });
  let server: DevServer | undefined;
  try {
    const submitting = client.submit("noop", { late: true }, { idempotencyKey: "node-client-late-submit" });
    // Let the first tries fail before the coordinator listens.
    await new Promise((resolve) => setTimeout(resolve, 600));
    server = await DevServer.start({ port });
    const submitted = await submitting;
    assert.equal(submitted.created, true);
    const task = await client.get(submitted.taskId, { wait: 10_000 });
    assert.equal(task.state, "succeeded");
    assert.deepEqual(task.result, { late: true });
    assert.equal(task.idempotencyKey, "node-client-late-submit");
  } finally {
    client.close();
    await server?.dispose();
  }
});
