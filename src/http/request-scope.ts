import { Elysia } from "elysia";
import type { InflightEntry } from "../lifecycle/inflight";

/** Header carrying the request id on every response. */
export const REQUEST_ID_HEADER = "request-id";

/**
 * Per-request context every later hook and route reads from `ctx`: `requestId` (given first
 * thing, so even early refusals carry one) and `work`, the in-flight entry the memory guard
 * registered (null for requests it does not cover). The app supplies the id format.
 * Plugins that read them `.use()` the same instance; Elysia runs it once per request.
 */
export function requestScope(newId: () => string) {
  return new Elysia({ name: "pensieve.request-scope" })
    .decorate({ requestId: "", work: null as InflightEntry | null })
    .onRequest((ctx) => {
      // Decorators are copied into each request's context; this sets this request's own.
      ctx.requestId = newId();
      ctx.set.headers[REQUEST_ID_HEADER] = ctx.requestId;
    })
    .as("scoped");
}

/** The request-scope plugin as the app builds it; routes and guards `.use()` it. */
export type RequestScope = ReturnType<typeof requestScope>;
