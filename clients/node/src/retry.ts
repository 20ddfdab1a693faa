// Retries on UNAVAILABLE. The coordinator answers UNAVAILABLE when nothing was written (its store
// is away) and grpc-js reports it when the connection fails, so a call that got it may be sent
// again; submissions carry an idempotency key, which makes a repeat of one that did land harmless.

import { status } from "@grpc/grpc-js";
import { CeleritasError } from "./errors";

/** How calls are retried when the coordinator is unavailable. */
export interface RetryOptions {
  /** How many times a call is tried in all, the first try included; 1 disables retries. Default 8. */
  maxAttempts: number;
  /** The delay before the first retry, in milliseconds; it doubles with each retry. Default 100. */
  initialBackoffMs: number;
  /** The longest delay between two tries, in milliseconds. Default 5000. */
  maxBackoffMs: number;
}

/** With these, a call is given up after about 8 to 16 seconds of unavailability. */
export const defaultRetryOptions: Readonly<RetryOptions> = Object.freeze({
  maxAttempts: 8,
  initialBackoffMs: 100,
  maxBackoffMs: 5000,
});

/** Whether an error means "try again": UNAVAILABLE, and nothing else. */
export function isRetryable(error: unknown): boolean {
  return error instanceof CeleritasError && error.code === status.UNAVAILABLE;
}

/**
 * The delay before retry number `retry` (0 for the first retry): exponential, capped, with half of
 * it jittered so that clients that failed together do not come back together, while every delay
 * stays at least half the nominal one (a burst of retries cannot all land at once).
 */
export function backoffDelayMs(retry: number, options: RetryOptions): number {
  const nominal = Math.min(options.maxBackoffMs, options.initialBackoffMs * 2 ** retry);
  return nominal / 2 + Math.random() * (nominal / 2);
}

/** Runs `attempt` until it succeeds, fails with something other than UNAVAILABLE, or runs out of tries. */
export async function withRetries<T>(options: RetryOptions, attempt: () => Promise<T>): Promise<T> {
  for (let retry = 0; ; retry += 1) {
    try {
      return await attempt();
    } catch (error) {
      if (!isRetryable(error) || retry + 1 >= options.maxAttempts) {
        throw error;
      }
      await sleep(backoffDelayMs(retry, options));
    }
  }
}

/** Resolves after `ms` milliseconds, or rejects with the signal's reason as soon as it is aborted. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
