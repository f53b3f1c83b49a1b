/** Retry hints are capped: clients honour retry-after, and Pensieve promises at most 60 s. */
export const MAX_RETRY_AFTER_SECONDS = 60;

/** A retry hint in whole seconds within [1, MAX_RETRY_AFTER_SECONDS]. */
export function clampRetryAfter(seconds: number): number {
  return Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(1, Math.ceil(seconds)));
}
