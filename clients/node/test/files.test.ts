// Uploading files: from a path and from a buffer, read back byte for byte.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { credentials } from "@grpc/grpc-js";
import { after, before, describe, test } from "node:test";
import { Client, InvalidArgumentError } from "../src";
import { FileServiceClient } from "../src/generated/celeritas/v1/files";
import { DevServer } from "./support/server";

/** A file's bytes, read back over raw gRPC (the client has no download yet). */
async function downloaded(url: string, fileId: string): Promise<Buffer> {
  const files = new FileServiceClient(url.replace("http://", ""), credentials.createInsecure());
  try {
    const chunks: Buffer[] = [];
    for await (const response of files.download({ fileId, offset: 0 })) {
      chunks.push(response.chunk);
    }
    return Buffer.concat(chunks);
  } finally {
    files.close();
  }
}

const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

describe("upload", () => {
  let server: DevServer;
  let client: Client;
  let directory: string;

  before(async () => {
    server = await DevServer.start();
    client = new Client(server.url);
    directory = mkdtempSync(join(tmpdir(), "celeritas-files-"));
  });

  after(async () => {
    client?.close();
    await server?.dispose();
    rmSync(directory, { recursive: true, force: true });
  });

  test("stores a path's bytes in chunks, under its name", async () => {
    const content = randomBytes(2 * 1024 * 1024 + 17);
    const path = join(directory, "contacts.csv");
    writeFileSync(path, content);
    const stored = await client.upload(path, { contentType: "text/csv" });
    assert.equal(stored.name, "contacts.csv");
    assert.equal(stored.contentType, "text/csv");
    assert.equal(stored.size, content.length);
    assert.equal(stored.sha256, sha256(content));
    assert.ok(stored.createdAt instanceof Date);
    assert.deepEqual(await downloaded(server.url, stored.fileId), content);
  });

  test("stores a buffer, which needs a name", async () => {
    const content = Buffer.from("email\na@example.com\n");
    const stored = await client.upload(content, { name: "inline.csv" });
    assert.equal(stored.contentType, "application/octet-stream");
    assert.equal(stored.size, content.length);
    assert.deepEqual(await downloaded(server.url, stored.fileId), content);
    await assert.rejects(client.upload(content), TypeError);
    await assert.rejects(client.upload(content, { name: "" }), InvalidArgumentError);
  });

  test("a path that cannot be read rejects with the read error", async () => {
    await assert.rejects(client.upload(join(directory, "missing.csv")), /ENOENT/);
  });
});
