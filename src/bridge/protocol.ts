/**
 * Shapes of the worker protocol v1 (python_bridge/PROTOCOL.md) as the server
 * sees them, and the mapping of worker errors to typed engine errors.
 */

import { EngineBadRequestError, EngineError, PromptTooLongError } from "../engine/errors";
import type { Logger } from "../log";

export const PROTOCOL_VERSION = 1;

/** Any line the worker writes to stdout, after JSON parsing and basic checks. */
export interface WorkerMessage {
  v: number;
  type: string;
  id?: string | null;
  [field: string]: unknown;
}

export interface HelloMessage extends WorkerMessage {
  type: "hello";
  pid?: number;
  python?: string;
  mlx?: string;
  mlx_lm?: string;
  platform?: string;
}

export interface LoadedMessage extends WorkerMessage {
  type: "loaded";
  model: string;
  context_length: number;
  vocab_size?: number;
  supports_vision?: boolean;
  kv_bytes_per_token?: number;
  /** Generations the worker runs at once (batched); absent or 1 means one at a time. */
  max_concurrency?: number;
  has_tool_calling?: boolean;
  tool_parser?: string | null;
  has_thinking?: boolean;
}

/** The `prompt_cache` object of a `stats` reply. */
export interface WorkerPromptCache {
  entries?: number;
  bytes?: number;
  max_entries?: number;
  max_bytes?: number;
  hits?: number;
  misses?: number;
  tokens_reused?: number;
}

export interface WorkerMemory {
  active_gb?: number;
  cache_gb?: number;
  peak_gb?: number;
  rss_gb?: number;
}

/** Reads a byte stream to its end. Never rejects: a pipe errors when its child is killed. */
export async function readAll(stream: ReadableStream<Uint8Array>, onChunk: (chunk: Uint8Array) => void): Promise<void> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      onChunk(value);
    }
  } catch {
    // What was read is kept; the exit watcher reports why the pipe ended.
  } finally {
    reader.releaseLock();
  }
}

/** Logs warnings and errors to stderr; drops info and debug. Used when the caller passes no logger. */
export const stderrLogger: Logger = {
  debug() {},
  info() {},
  warn: (msg, fields) => console.error(`[bridge] ${msg}`, fields ?? ""),
  error: (msg, fields) => console.error(`[bridge] ${msg}`, fields ?? ""),
};

/**
 * Parses one stdout line. Returns the message, or a reason it breaks the protocol.
 */
export function parseWorkerLine(line: string): { ok: true; msg: WorkerMessage } | { ok: false; violation: string } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { ok: false, violation: `non-JSON line on stdout: ${JSON.stringify(line.slice(0, 200))}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { ok: false, violation: `stdout line is not a JSON object: ${line.slice(0, 200)}` };
  }
  const msg = value as Record<string, unknown>;
  if (msg.v !== PROTOCOL_VERSION) {
    return { ok: false, violation: `unsupported protocol version ${JSON.stringify(msg.v)}` };
  }
  if (typeof msg.type !== "string") return { ok: false, violation: "message without a type" };
  return { ok: true, msg: msg as WorkerMessage };
}

/** Maps a worker `error` reply to the typed engine error. */
export function engineErrorFromReply(msg: WorkerMessage): EngineError {
  const message = typeof msg.message === "string" ? msg.message : "worker error";
  switch (msg.code) {
    case "prompt_too_long": {
      const promptTokens = Number(msg.prompt_tokens);
      const maxContext = Number(msg.max_context);
      if (Number.isFinite(promptTokens) && Number.isFinite(maxContext)) {
        return new PromptTooLongError(promptTokens, maxContext);
      }
      // Still a prompt-too-long (clients compact on it), with the worker's words as the detail.
      return new PromptTooLongError(undefined, undefined, message);
    }
    case "bad_request":
      return new EngineBadRequestError(message);
    default:
      return new EngineError(`worker ${String(msg.code ?? "error")}: ${message}`);
  }
}
