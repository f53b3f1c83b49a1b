import { Elysia } from "elysia";
import { newRequestId } from "../anthropic/errors";

/** Header carrying the request id on every response, as Anthropic does. */
export const REQUEST_ID_HEADER = "request-id";

/** Reads the id `requestId()` put on the response headers; errors quote it in their body. */
export function requestIdOf(set: { headers: Record<string, unknown> }): string | null {
  const id = set.headers[REQUEST_ID_HEADER];
  return typeof id === "string" ? id : null;
}

/** Gives every request a `req_...` id, first thing, so even early refusals carry one. */
export function requestId() {
  return new Elysia({ name: "pensieve.request-id" })
    .onRequest(({ set }) => {
      set.headers[REQUEST_ID_HEADER] = newRequestId();
    })
    .as("global");
}
