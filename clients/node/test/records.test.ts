// Reading the records tasks emitted: every page, filters, whole trees.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, type TaskRecord } from "../src";
import { DevServer } from "./support/server";

// Records are written before the task's result, so a succeeded task's records are all there.
const lostRecords = "the task succeeded, yet fewer records are listed than it emitted";

async function collect(records: AsyncIterable<TaskRecord>): Promise<TaskRecord[]> {
  const collected: TaskRecord[] = [];
  for await (const record of records) {
    collected.push(record);
  }
  return collected;
}

describe("listRecords", () => {
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

  test("iterates over every page, oldest first", async () => {
    const { taskId } = await client.submit("emit_records", { count: 2_500, kind: "contact", status: "valid" });
    const task = await client.get(taskId, { wait: 30_000 });
    assert.equal(task.state, "succeeded");
    assert.deepEqual(task.result, { emitted: 2_500, skipped: 0 });

    const records = await collect(client.listRecords(taskId, { pageSize: 1_000 }));
    assert.equal(records.length, 2_500, lostRecords);
    assert.deepEqual(
      records.map((record) => record.key),
      Array.from({ length: 2_500 }, (_, index) => `contact-${index}`),
    );
    const first = records[0]!;
    assert.equal(first.taskId, taskId);
    assert.equal(first.rootId, taskId);
    assert.equal(first.kind, "contact");
    assert.equal(first.status, "valid");
    assert.deepEqual(first.data, { index: 0 });
    assert.ok(first.createdAt instanceof Date);
  });

  test("pages can be read one by one with their tokens", async () => {
    const { taskId } = await client.submit("emit_records", { count: 5 });
    const task = await client.get(taskId, { wait: 30_000 });
    assert.equal(task.state, "succeeded", JSON.stringify(task));
    const firstPage = await client.listRecordsPage(taskId, { pageSize: 3 });
    assert.deepEqual(
      firstPage.records.map((record) => record.key),
      ["item-0", "item-1", "item-2"],
      lostRecords,
    );
    assert.ok(firstPage.nextPageToken);
    const secondPage = await client.listRecordsPage(taskId, { pageSize: 3, pageToken: firstPage.nextPageToken });
    assert.deepEqual(
      secondPage.records.map((record) => record.key),
      ["item-3", "item-4"],
    );
    assert.equal(secondPage.nextPageToken, undefined);
  });

  test("filters by kind and status, and reads a whole tree", async () => {
    const { taskId: rootId } = await client.submit("fan_out", {
      task: "emit_records",
      args: [
        { count: 3, kind: "delivery", status: "delivered" },
        { count: 2, kind: "bounce", status: "failed" },
      ],
    });
    const finished = await collectTree(rootId);
    assert.equal(finished, "succeeded");

    assert.deepEqual(await collect(client.listRecords(rootId)), [], "the root emitted none itself");
    const tree = await collect(client.listRecords(rootId, { wholeTree: true }));
    assert.equal(tree.length, 5);
    assert.ok(tree.every((record) => record.rootId === rootId && record.taskId !== rootId));
    const delivered = await collect(client.listRecords(rootId, { wholeTree: true, status: "delivered" }));
    assert.deepEqual(
      delivered.map((record) => record.key),
      ["delivery-0", "delivery-1", "delivery-2"],
    );
    const bounces = await collect(client.listRecords(rootId, { wholeTree: true, kind: "bounce" }));
    assert.deepEqual(
      bounces.map((record) => record.key),
      ["bounce-0", "bounce-1"],
    );
  });

  /** Follows the tree to its end and answers the root's final state. */
  async function collectTree(rootId: string): Promise<string | undefined> {
    for await (const event of client.streamProgress(rootId)) {
      if (event.change.type === "treeFinished") {
        return event.change.rootState;
      }
    }
    return undefined;
  }
});
