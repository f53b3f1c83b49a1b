/** Retry hints are capped: clients honour retry-after, and Pensieve promises at most 60 s (a protocol promise, not a tunable). */
export const MAX_RETRY_AFTER_SECONDS = 60;

/** Exponential backoff: 0 before the first failure, then `baseMs` doubling per failure, at most `maxMs`. */
export function backoffMs(failures: number, baseMs: number, maxMs: number): number {
  return failures <= 0 ? 0 : Math.min(maxMs, baseMs * 2 ** (failures - 1));
}

/** A retry hint in whole seconds within [1, MAX_RETRY_AFTER_SECONDS]. */
export function clampRetryAfter(seconds: number): number {
  return Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(1, Math.ceil(seconds)));
}
