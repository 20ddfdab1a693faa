// The README's example of send_campaign's args is one the task accepts: the object literal
// assigned to `const campaign` in its TypeScript block is submitted to a `celeritas dev` whose
// worker has a relay, and the campaign task must succeed (it checks every field, the templates
// and the relay before it queues a batch, and fails with invalid_args naming the field otherwise).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { runInNewContext } from "node:vm";
import { Client } from "../src";
import { DevServer, freePort } from "./support/server";

/** The README next to package.json (the tests run from dist/test). */
function readme(): string {
  return readFileSync(join(__dirname, "..", "..", "README.md"), "utf8");
}

/** Every `const campaign = { … };` of the README's ts blocks, evaluated as the literal it is. */
function documentedCampaigns(text: string): Record<string, unknown>[] {
  const campaigns: Record<string, unknown>[] = [];
  for (const block of text.matchAll(/^```ts\n([\s\S]*?)^```/gm)) {
    for (const literal of block[1]!.matchAll(/^const campaign = (\{[\s\S]*?^\});/gm)) {
      // A fresh context with nothing in it: the literal can only build a value.
      campaigns.push(runInNewContext(`(${literal[1]})`, {}) as Record<string, unknown>);
    }
  }
  return campaigns;
}

describe("README", () => {
  let server: DevServer;
  let client: Client;

  before(async () => {
    // Nothing listens there: the campaign task only checks that a relay is configured, and the
    // batches it queues are cancelled before they could send.
    server = await DevServer.start({ env: { CELERITAS_SMTP_URL: `smtp://127.0.0.1:${await freePort()}` } });
    client = new Client(server.url);
  });

  after(async () => {
    client?.close();
    await server?.dispose();
  });

  test("the documented send_campaign args are accepted", async () => {
    const campaigns = documentedCampaigns(readme());
    assert.ok(campaigns.length > 0, "the README shows send_campaign's args as `const campaign = {…};`");
    for (const campaign of campaigns) {
      const { taskId } = await client.submit("send_campaign", campaign);
      try {
        const task = await client.get(taskId, { wait: 30_000 });
        assert.equal(task.state, "succeeded", `send_campaign refused ${JSON.stringify(campaign)}: ${JSON.stringify(task.error)}`);
        const result = task.result as { campaign_id: string; recipients: number };
        assert.equal(result.campaign_id, campaign.campaign_id);
        assert.equal(result.recipients, (campaign.recipients as unknown[]).length);
      } finally {
        await client.cancel(taskId, { terminate: true });
      }
    }
  });
});
