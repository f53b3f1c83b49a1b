/**
 * Anthropic's error shape, and the one mapping from every typed error (HTTP, engine,
 * validation, ...) to a status, body and headers.
 */
import { NotFoundError, ParseError, ValidationError } from "elysia";
import {
  EngineBadRequestError,
  EngineOverloadedError,
  EngineTimeoutError,
  EngineUnavailableError,
  EngineUpstreamFailureError,
  PromptTooLongError,
  WorkerCrashedError,
} from "../engine/errors";
import { HttpError, type HttpErrorKind, retryHeaders } from "../http/errors";

// The HTTP error family lives in src/http; re-exported so API code has one import.
export {
  AuthenticationError,
  HttpError,
  type HttpErrorKind,
  InvalidRequestError,
  NotFoundApiError,
  OverloadedError,
  PermissionError,
  RequestTooLargeError,
  ServiceUnavailableError,
} from "../http/errors";

export type AnthropicErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "not_found_error"
  | "request_too_large"
  | "rate_limit_error"
  | "timeout_error"
  | "api_error"
  | "overloaded_error";

/** Anthropic's error body: `{type:"error", error:{type, message}, request_id}`. */
export interface AnthropicErrorBody {
  type: "error";
  error: { type: AnthropicErrorType; message: string };
  request_id: string | null;
}

/** An error as the HTTP layer sends it: status, body, extra headers. */
export interface MappedError {
  status: number;
  body: AnthropicErrorBody;
  headers: Record<string, string>;
}

/** The one place an HTTP error kind gets its Anthropic error type. */
export const ANTHROPIC_ERROR_TYPE: Record<HttpErrorKind, AnthropicErrorType> = {
  invalid_request: "invalid_request_error",
  authentication: "authentication_error",
  permission: "permission_error",
  not_found: "not_found_error",
  too_large: "request_too_large",
  rate_limited: "rate_limit_error",
  timeout: "timeout_error",
  internal: "api_error",
  overloaded: "overloaded_error",
};

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** A random id in Anthropic's style, e.g. `req_011CV...` (prefix + 24 base62 characters). */
export function newId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  let out = prefix;
  for (const b of bytes) out += BASE62[b % 62];
  return out;
}

/** A `req_...` id for one request. */
export const newRequestId = (): string => newId("req_");

/** Anthropic's error body; also the payload of a stream's `event: error`. */
export function errorBody(type: AnthropicErrorType, message: string, requestId: string | null): AnthropicErrorBody {
  return { type: "error", error: { type, message }, request_id: requestId };
}

// "messages/0/role" (JSON pointer) -> "messages.0.role", the way Anthropic names fields.
function fieldPath(pointer: string): string {
  return pointer.replace(/^\//, "").replaceAll("/", ".");
}

function validationMessage(err: ValidationError): string {
  const first = err.valueError;
  if (!first) return `Invalid request ${err.type}`;
  const path = fieldPath(first.path);
  return path ? `${path}: ${first.message}` : first.message;
}

/**
 * Anthropic's wording for a prompt that does not fit: Claude Code compacts on "prompt is too
 * long". Without numbers (an upstream that did not state them) the backend's own words follow.
 */
export function promptTooLongMessage(err: PromptTooLongError): string {
  if (err.promptTokens !== undefined && err.maxTokens !== undefined)
    return `prompt is too long: ${err.promptTokens} tokens > ${err.maxTokens} maximum`;
  return `prompt is too long${err.detail ? `: ${err.detail}` : ""}`;
}

/** Maps any thrown value to Anthropic's error response parts. Unknown errors become a 500. */
export function mapError(err: unknown, requestId: string | null): MappedError {
  // Elysia wraps errors thrown by parsers (our body limit) in ParseError; unwrap typed ones.
  if (err instanceof ParseError && err.cause instanceof HttpError) err = err.cause;
  const build = (status: number, type: AnthropicErrorType, message: string, headers: Record<string, string> = {}) => ({
    status,
    body: errorBody(type, message, requestId),
    headers,
  });

  if (err instanceof HttpError) return build(err.status, ANTHROPIC_ERROR_TYPE[err.kind], err.message, err.headers);
  if (err instanceof ValidationError) return build(400, "invalid_request_error", validationMessage(err));
  if (err instanceof ParseError) return build(400, "invalid_request_error", "Invalid request body: malformed JSON");
  if (err instanceof NotFoundError) return build(404, "not_found_error", "Not found");
  if (err instanceof PromptTooLongError) return build(400, "invalid_request_error", promptTooLongMessage(err));
  if (err instanceof EngineBadRequestError) return build(400, "invalid_request_error", err.message);
  if (err instanceof EngineOverloadedError)
    return build(529, "overloaded_error", err.message || "Overloaded", retryHeaders(err.retryAfterSeconds));
  if (err instanceof EngineTimeoutError)
    return build(504, "timeout_error", err.message || "The model did not answer in time", { "x-should-retry": "true" });
  if (err instanceof WorkerCrashedError) return build(500, "api_error", err.message);
  if (err instanceof EngineUnavailableError) return build(503, "api_error", err.message);
  if (err instanceof EngineUpstreamFailureError) return build(502, "api_error", err.message);
  const message = err instanceof Error && err.message ? `Internal server error: ${err.message}` : "Internal server error";
  return build(500, "api_error", message);
}
