// Following a task tree's progress: StreamProgress as an async iterator that survives a
// coordinator going away. Events are numbered per tree and stored, so after a broken stream the
// iterator asks again from the last sequence it yielded and the caller sees every event exactly
// once, in order, whichever coordinator answers.

import { status, type ClientReadableStream, type Metadata } from "@grpc/grpc-js";
import { progressEventFromPb } from "./convert";
import type { CallContext } from "./connection";
import { errorForStatus, fromGrpcError } from "./errors";
import type { StreamProgressRequest, StreamProgressResponse } from "./generated/celeritas/v1/tasks";
import { backoffDelayMs, isRetryable, sleep } from "./retry";
import type { ProgressEvent } from "./types";

/** How to follow a tree. */
export interface StreamProgressOptions {
  /** Start after this sequence number (a `ProgressEvent.sequence` seen before); default: from the first event. */
  fromSequence?: number;
  /** Stops the stream: the iterator then throws the signal's reason. */
  signal?: AbortSignal;
}

/** A grpc-js server-streaming method bound to its client. */
export type OpenProgressStream = (request: StreamProgressRequest, metadata: Metadata) => ClientReadableStream<StreamProgressResponse>;

/**
 * Yields the tree's events until the one with `treeFinished`, then ends. A stream that breaks with
 * UNAVAILABLE, or ends before the tree finished (a coordinator shutting down), is opened again
 * after a backoff, resuming after the last event yielded; it gives up after the client's
 * `retry.maxAttempts` tries in a row that brought no event. Other errors are thrown as they come
 * (FAILED_PRECONDITION for a task that is not a root, naming the root; NOT_FOUND; INVALID_ARGUMENT
 * for a `fromSequence` past the end).
 */
export async function* followProgress(
  open: OpenProgressStream,
  context: CallContext,
  taskId: string,
  options: StreamProgressOptions = {},
): AsyncGenerator<ProgressEvent, void, undefined> {
  const { signal } = options;
  let lastSequence = options.fromSequence;
  let triesWithoutEvent = 0;
  for (;;) {
    signal?.throwIfAborted();
    const call = open({ taskId, fromSequence: lastSequence }, context.metadata());
    const cancel = () => call.cancel();
    signal?.addEventListener("abort", cancel, { once: true });
    let interruption: unknown;
    try {
      for await (const message of call as AsyncIterable<StreamProgressResponse>) {
        triesWithoutEvent = 0;
        const event = progressEventFromPb(message);
        lastSequence = event.sequence;
        yield event;
        if (event.change.type === "treeFinished") {
          return;
        }
      }
      interruption = errorForStatus(status.UNAVAILABLE, "the progress stream ended before the tree finished");
    } catch (error) {
      signal?.throwIfAborted();
      interruption = fromGrpcError(error);
      if (!isRetryable(interruption)) {
        throw interruption;
      }
    } finally {
      signal?.removeEventListener("abort", cancel);
      // Ends the call when the caller stopped early (break, return) or the tree finished; a call
      // that already ended ignores it.
      call.cancel();
    }
    triesWithoutEvent += 1;
    if (triesWithoutEvent >= context.retry.maxAttempts) {
      throw interruption;
    }
    await sleep(backoffDelayMs(triesWithoutEvent - 1, context.retry), signal);
  }
}
