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

/** 400: the request is malformed. */
export class InvalidRequestError extends HttpError {
  constructor(message: string) {
    super(400, "invalid_request", message);
  }
}

/** 401: a missing or wrong token. */
export class AuthenticationError extends HttpError {
  constructor(message = "invalid x-api-key") {
    super(401, "authentication", message);
  }
}

/** 403 (e.g. a Host header that is not allowed). */
export class PermissionError extends HttpError {
  constructor(message: string) {
    super(403, "permission", message);
  }
}

/** 404. */
export class NotFoundApiError extends HttpError {
  constructor(message = "Not found") {
    super(404, "not_found", message);
  }
}

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
  constructor(message = "Overloaded", retryAfterSeconds = 5) {
    super(529, "overloaded", message, retryHeaders(retryAfterSeconds));
  }
}

/** 503 overloaded: the memory gate's refusal (or shutdown). Same retry headers as 529. */
export class ServiceUnavailableError extends HttpError {
  constructor(message: string, retryAfterSeconds = 10) {
    super(503, "overloaded", message, retryHeaders(retryAfterSeconds));
  }
}
