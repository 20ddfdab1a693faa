// Files: `client.upload` streams a file (a path, read in 1 MiB pieces, or a buffer) into the
// coordinator's store for tasks to read. Not retried: a stream cannot be replayed.

import { once } from "node:events";
import { createReadStream } from "node:fs";
import { basename } from "node:path";
import type { CallContext } from "./connection";
import { fromGrpcError } from "./errors";
import type { FileInfo, FileServiceClient, UploadRequest } from "./generated/celeritas/v1/files";

/** The most bytes one upload message carries (the contract's limit). */
const CHUNK_BYTES = 1024 * 1024;

/** How to store an uploaded file. */
export interface UploadOptions {
  /** The name to store it under; default: the path's last part (required for a buffer). */
  name?: string;
  /** Its media type, such as "text/csv"; default "application/octet-stream". */
  contentType?: string;
}

/** A file stored in the coordinator; pass `fileId` in a task's args. */
export interface StoredFile {
  /** The file's id (UUID text). */
  fileId: string;
  /** The name given at upload. */
  name: string;
  /** The media type given at upload. */
  contentType: string;
  /** The size in bytes. */
  size: number;
  /** The SHA-256 digest of the bytes, as 64 lowercase hexadecimal digits. */
  sha256: string;
  /** When the upload began. */
  createdAt?: Date;
}

function storedFileFromPb(file: FileInfo | undefined): StoredFile {
  if (file === undefined) {
    throw new TypeError("the coordinator's answer has no file");
  }
  return {
    fileId: file.fileId,
    name: file.name,
    contentType: file.contentType,
    size: file.size,
    sha256: file.sha256,
    createdAt: file.createdAt,
  };
}

/** A source's bytes, at most `CHUNK_BYTES` at a time. */
async function* chunksOf(source: string | Uint8Array): AsyncGenerator<Uint8Array, void, undefined> {
  if (typeof source !== "string") {
    for (let start = 0; start < source.length; start += CHUNK_BYTES) {
      yield source.subarray(start, start + CHUNK_BYTES);
    }
    return;
  }
  for await (const chunk of createReadStream(source, { highWaterMark: CHUNK_BYTES })) {
    yield chunk as Buffer;
  }
}

/** Uploads `source` on `service`: the header, then the bytes, waiting for room as it writes. */
export function upload(
  service: FileServiceClient,
  context: CallContext,
  source: string | Uint8Array,
  options: UploadOptions = {},
): Promise<StoredFile> {
  const name = options.name ?? (typeof source === "string" ? basename(source) : undefined);
  if (name === undefined) {
    return Promise.reject(new TypeError("upload: `name` is required when uploading a buffer"));
  }
  return new Promise<StoredFile>((resolve, reject) => {
    let settled = false;
    let answered: () => void = () => {};
    const answer = new Promise<void>((resolveAnswer) => {
      answered = resolveAnswer;
    });
    const call = service.upload(context.metadata(), {}, (error, response) => {
      settled = true;
      answered();
      if (error) {
        reject(fromGrpcError(error));
        return;
      }
      try {
        resolve(storedFileFromPb(response.file));
      } catch (conversionError) {
        reject(conversionError);
      }
    });
    const send = async (message: UploadRequest["message"]): Promise<void> => {
      if (!call.write({ message })) {
        // Room again, or the coordinator answered (refused) and nothing more is read.
        await Promise.race([once(call, "drain"), answer]);
      }
    };
    const pump = async (): Promise<void> => {
      await send({ $case: "header", value: { name, contentType: options.contentType ?? "" } });
      for await (const chunk of chunksOf(source)) {
        if (settled) {
          return;
        }
        await send({ $case: "chunk", value: Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) });
      }
      call.end();
    };
    pump().catch((readError: unknown) => {
      // Abandoned before the end: the coordinator keeps nothing of a cancelled upload.
      call.cancel();
      settled = true;
      reject(readError);
    });
  });
}
