/**
 * The HTTP error family: a status, a protocol-neutral kind and extra headers. The API layer
 * (its mapError) turns each into its own body.
 */
import { clampRetryAfter } from "../engine/retry";

/** What went wrong, independent of any API's error vocabulary. */
export type HttpErrorKind =
  | "invalid_request"
  | "authentication"
  | "permission"
  | "not_found"
  | "too_large"
  | "rate_limited"
  | "timeout"
  | "internal"
  | "overloaded";

/** An error that already knows its HTTP status and kind. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly kind: HttpErrorKind,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = new.target.name;
  }
}

// The base of each error with a fixed status and kind: only the message varies.
function fixedStatusError(status: number, kind: HttpErrorKind, defaultMessage: string) {
  return class extends HttpError {
    constructor(message = defaultMessage) {
      super(status, kind, message);
    }
  };
}

/** 400: the request is malformed. */
export class InvalidRequestError extends fixedStatusError(400, "invalid_request", "Invalid request") {}

/** 401: a missing or wrong token. */
export class AuthenticationError extends fixedStatusError(401, "authentication", "invalid x-api-key") {}

/** 403 (e.g. a Host header that is not allowed). */
export class PermissionError extends fixedStatusError(403, "permission", "Forbidden") {}

/** 404. */
export class NotFoundApiError extends fixedStatusError(404, "not_found", "Not found") {}

/** 413, with the limit in the message. */
export class RequestTooLargeError extends HttpError {
  constructor(maxBytes: number) {
    super(413, "too_large", `Request exceeds the maximum allowed number of bytes (${maxBytes}).`);
  }
}

/** retry-after (capped) and x-should-retry, so clients back off and retry. */
export function retryHeaders(seconds: number): Record<string, string> {
  return { "retry-after": String(clampRetryAfter(seconds)), "x-should-retry": "true" };
}

/** 529: too much queued work. Carries retry-after and x-should-retry so clients back off. */
export class OverloadedError extends HttpError {
  constructor(message: string, retryAfterSeconds: number) {
    super(529, "overloaded", message, retryHeaders(retryAfterSeconds));
  }
}

/** 503 overloaded: the memory gate's refusal (or shutdown). Same retry headers as 529. */
export class ServiceUnavailableError extends HttpError {
  constructor(message: string, retryAfterSeconds: number) {
    super(503, "overloaded", message, retryHeaders(retryAfterSeconds));
  }
}
