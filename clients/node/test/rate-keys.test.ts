// Rate keys: a configured `[rate_limits]` pattern spaces out the leases of the tasks that carry a
// matching key, and leaves the others alone; a malformed key is refused naming `rate_keys`.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, InvalidArgumentError } from "../src";
import { DevServer } from "./support/server";

const limited = "customer:slow";

describe("rate keys", () => {
  let server: DevServer;
  let client: Client;

  before(async () => {
    server = await DevServer.start({ files: { "celeritas.toml": `[rate_limits]\n"${limited}" = "2/s"\n` } });
    client = new Client(server.url);
  });

  after(async () => {
    client?.close();
    await server?.dispose();
  });

  test("tasks carrying a limited key start at its rate and the others do not wait", async () => {
    const limitedTasks = [];
    for (let n = 0; n < 5; n++) {
      limitedTasks.push(await client.submit("noop", { n }, { rateKeys: { [limited]: 1 } }));
    }
    const plainTasks = [];
    for (let n = 0; n < 5; n++) {
      plainTasks.push(await client.submit("noop", { n }));
    }

    for (const submitted of plainTasks) {
      const task = await client.get(submitted.taskId, { wait: 30_000 });
      assert.equal(task.state, "succeeded");
    }
    const starts: number[] = [];
    for (const submitted of limitedTasks) {
      const task = await client.get(submitted.taskId, { wait: 60_000 });
      assert.equal(task.state, "succeeded");
      assert.ok(task.startedAt instanceof Date);
      starts.push(task.startedAt.getTime());
    }
    starts.sort((a, b) => a - b);
    const spanSeconds = (starts[starts.length - 1] - starts[0]) / 1000;
    // Five leases at 2/s from a bucket that starts with one token take at least 2 s.
    assert.ok(spanSeconds >= 1.5 && spanSeconds <= 30, `the limited tasks started over ${spanSeconds} s`);
  });

  test("a rate key with a star is refused naming rate_keys", async () => {
    await assert.rejects(client.submit("noop", {}, { rateKeys: { "a*": 1 } }), (error: unknown) => {
      assert.ok(error instanceof InvalidArgumentError);
      assert.match(`${error.field ?? ""} ${error.details}`, /rate_keys/);
      return true;
    });
  });

  test("submitMany carries rate keys too and names the bad spec", async () => {
    await assert.rejects(
      client.submitMany([
        { name: "noop", rateKeys: { [limited]: 1 } },
        { name: "noop", rateKeys: { "a*": 1 } },
      ]),
      (error: unknown) => {
        assert.ok(error instanceof InvalidArgumentError);
        assert.match(`${error.field ?? ""} ${error.details}`, /tasks\[1\]\.rate_keys/);
        return true;
      },
    );
  });
});
