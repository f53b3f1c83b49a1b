/**
 * Upstream (OpenAI-compatible server) failures, mapped onto the typed engine errors the HTTP
 * layer already knows, plus one new type for "the upstream cannot be reached".
 */
import {
  EngineBadRequestError,
  EngineError,
  EngineOverloadedError,
  EngineUnavailableError,
  EngineUpstreamFailureError,
  PromptTooLongError,
} from "../engine/errors";
import { clampRetryAfter } from "../engine/retry";

/** Why the upstream could not be used. */
export type UpstreamFailure = "unreachable" | "timeout" | "auth" | "bad_gateway" | "stream_broken";

/**
 * The upstream server is down, unreachable, stalled or misconfigured (e.g. a rejected API key).
 * The HTTP layer should answer 503 with this message as a server error, not an overload:
 * retrying soon will not help until an operator acts.
 */
export class UpstreamUnavailableError extends EngineUnavailableError {
  constructor(
    message: string,
    readonly failure: UpstreamFailure,
    readonly upstream: string,
  ) {
    super(message);
  }
}

/** Upstream error that is neither the client's fault nor an outage (e.g. a 500). */
export class UpstreamServerError extends EngineUpstreamFailureError {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** Seconds from a Retry-After header (delta-seconds or HTTP date), clamped to [1, 60]; `fallback` without a usable one. */
export function parseRetryAfter(value: string | null, fallback: number, now = Date.now()): number {
  if (!value) return fallback;
  let seconds = Number(value.trim());
  if (!Number.isFinite(seconds)) {
    const at = Date.parse(value);
    if (Number.isNaN(at)) return fallback;
    seconds = (at - now) / 1000;
  }
  return clampRetryAfter(seconds);
}

// The body as a JSON object, or null when it is not one.
function jsonObject(text: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/**
 * The human message of an upstream error body. Servers disagree on the shape:
 * OpenAI/llama-server `{error:{message}}`, vLLM/SGLang `{object:"error", message}`,
 * mlx_lm.server `{error:"text"}`, FastAPI `{detail}`; anything else is raw text.
 */
export function upstreamErrorMessage(body: string): string {
  return messageOf(body.trim(), jsonObject(body));
}

function messageOf(text: string, j: Record<string, unknown> | null): string {
  const err = j?.error;
  if (typeof err === "string") return err;
  if (err && typeof err === "object" && typeof (err as { message?: unknown }).message === "string") {
    return (err as { message: string }).message;
  }
  if (typeof j?.message === "string") return j.message;
  if (typeof j?.detail === "string") return j.detail;
  if (Array.isArray(j?.detail)) return JSON.stringify(j.detail);
  return text.length > 500 ? `${text.slice(0, 500)}…` : text || "(empty body)";
}

/** What a context-length complaint says, as far as its numbers can be read. */
export interface ContextComplaint {
  /** The model's context window. */
  maxContext?: number;
  /** Prompt tokens, when the server states them. */
  promptTokens?: number;
  /** Whether the wording is about context length at all. */
  isContextError: boolean;
}

const CONTEXT_HINT =
  /maximum context length|context length|maximum model length|exceeds? the available context|context size|maximum allowed length|too long|exceed_context_size/i;
const MAX_PATTERNS = [
  /maximum context length (?:is|of) (\d+)/i,
  /maximum model length (?:is|of) (\d+)/i,
  /maximum allowed length \((\d+) tokens?\)/i,
  /context (?:size|length|window) (?:is|of) (\d+)/i,
];
const PROMPT_PATTERNS = [
  /\((\d+) in the messages/i, // vLLM: "you requested 5000 tokens (4000 in the messages, 1000 in the completion)"
  /has (\d+) input tokens/i, // vLLM: "your request has 5000 input tokens"
  /prompt \(length (\d+)\)/i, // vLLM v1: "The decoder prompt (length 5000) is longer than..."
  /Input length \((\d+) tokens?\)/i, // SGLang
  /(\d+) tokens from the input messages/i, // SGLang
  /prompt (?:has|is|of) (\d+) tokens/i,
];

/** Read a context-length error from an upstream body (any server's wording). */
export function parseContextComplaint(body: string): ContextComplaint {
  const j = jsonObject(body);
  const message = messageOf(body.trim(), j);
  const out: ContextComplaint = { isContextError: CONTEXT_HINT.test(message) || CONTEXT_HINT.test(body) };
  // llama-server puts the numbers in fields: {error:{type:"exceed_context_size_error", n_prompt_tokens, n_ctx}}
  const err = j?.error;
  if (err && typeof err === "object") {
    const { n_ctx, n_prompt_tokens } = err as Record<string, unknown>;
    if (typeof n_ctx === "number") out.maxContext = n_ctx;
    if (typeof n_prompt_tokens === "number") out.promptTokens = n_prompt_tokens;
  }
  out.maxContext ??= firstNumber(message, MAX_PATTERNS);
  out.promptTokens ??= firstNumber(message, PROMPT_PATTERNS);
  return out;
}

function firstNumber(text: string, patterns: RegExp[]): number | undefined {
  for (const re of patterns) {
    const m = text.match(re);
    if (m?.[1]) return Number(m[1]);
  }
  return undefined;
}

/** Map a non-2xx upstream answer to a typed engine error; `retryAfterSeconds` when it gives no Retry-After. */
export function mapUpstreamStatus(status: number, headers: Headers, body: string, upstream: string, retryAfterSeconds: number): EngineError {
  const message = upstreamErrorMessage(body);
  if (status === 429 || status === 503) {
    return new EngineOverloadedError(
      `upstream ${upstream} is overloaded (${status}): ${message}`,
      parseRetryAfter(headers.get("retry-after"), retryAfterSeconds),
    );
  }
  if (status === 401 || status === 403) {
    // The operator's key, not the client's: never surface this as the client's auth error.
    return new UpstreamUnavailableError(
      `upstream ${upstream} rejected Pensieve's credentials (${status}); check --upstream-key`,
      "auth",
      upstream,
    );
  }
  if (status === 502 || status === 504) {
    return new UpstreamUnavailableError(`upstream ${upstream} gateway error (${status}): ${message}`, "bad_gateway", upstream);
  }
  if (status >= 400 && status < 500) {
    const c = parseContextComplaint(body);
    if (c.isContextError && c.promptTokens !== undefined && c.maxContext !== undefined && c.promptTokens > c.maxContext) {
      return new PromptTooLongError(c.promptTokens, c.maxContext);
    }
    if (c.isContextError && /input|prompt|messages/i.test(message) && c.promptTokens === undefined) {
      // Still a prompt that does not fit (clients compact on it), only without numbers.
      return new PromptTooLongError(undefined, c.maxContext, `upstream says: ${message}`);
    }
    return new EngineBadRequestError(`upstream rejected the request (${status}): ${message}`);
  }
  return new UpstreamServerError(`upstream ${upstream} failed (${status}): ${message}`, status);
}
