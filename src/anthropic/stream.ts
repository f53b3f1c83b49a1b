/**
 * Pure converter: engine events -> Anthropic SSE events ({event, data} objects).
 * Order: message_start, ping*, (content_block_start, delta*, content_block_stop)*,
 * message_delta, message_stop. No I/O here; the route wraps each object in Elysia's sse().
 */
import { createHash } from "node:crypto";
import type { EngineEvent, FinishReason } from "../engine/types";
import { type AnthropicErrorType, errorBody, newId } from "./errors";
import type { StopReasonT, UsageT } from "./schemas";

/** One SSE event: `event:` line plus JSON `data:` payload (whose `type` repeats the event). */
export interface SseEvent {
  event: string;
  data: { type: string } & Record<string, unknown>;
}

/** One message's identity, and how its thinking is shown. */
export interface StreamConverterOptions {
  /** msg_... */
  messageId: string;
  /** The name the client asked for; echoed back. */
  model: string;
  /** thinking.display === "omitted": thinking blocks carry a signature but no text. */
  omitThinking?: boolean;
  /** Echoed in the error event that ends a cancelled generation. */
  requestId?: string | null;
}

/**
 * Engine finish reasons -> Anthropic stop reasons. A cancelled generation has none (null):
 * it was cut short, and calling it end_turn would pass a fragment off as the whole answer.
 */
export function stopReasonOf(reason: FinishReason, sawToolCall: boolean): StopReasonT | null {
  switch (reason) {
    case "cancelled":
      return null;
    case "length":
      return "max_tokens";
    case "stop_sequence":
      return "stop_sequence";
    case "tool_calls":
      return "tool_use";
    default:
      // A template that stops after a tool call reports a plain stop; Anthropic says tool_use.
      return sawToolCall ? "tool_use" : "end_turn";
  }
}

/** The error that ends a cancelled generation (stream `event: error`, JSON 503): retryable. */
export const CANCELLED_MESSAGE = "The generation was cancelled before it finished, so the answer is incomplete. Retry the request.";

/**
 * Anthropic splits the prompt into uncached input_tokens, cache reads and cache writes;
 * the three sum to the prompt's tokens.
 */
export function usageOf(promptTokens: number, cachedTokens: number, outputTokens: number, createdTokens = 0): UsageT {
  const cached = Math.min(Math.max(0, cachedTokens), promptTokens);
  const created = Math.min(Math.max(0, createdTokens), promptTokens - cached);
  return {
    input_tokens: promptTokens - cached - created,
    output_tokens: outputTokens,
    cache_read_input_tokens: cached,
    cache_creation_input_tokens: created,
  };
}

/** An opaque, stable signature for a thinking block (clients only echo it back). */
export function thinkingSignature(text: string): string {
  return "pensieve1:" + createHash("sha256").update(text).digest("base64");
}

/** `event: error`, for a failure after the stream has started; its data is Anthropic's error body. */
export function errorEvent(type: AnthropicErrorType, message: string, requestId: string | null = null): SseEvent {
  return { event: "error", data: { ...errorBody(type, message, requestId) } };
}

/**
 * A tool_use id in Anthropic's style (toolu_ + 24 base62 characters). Minted here, for every
 * backend, so that clients see one id format whichever engine produced the call.
 */
export const newToolUseId = (): string => newId("toolu_");

const pingEvent = (): SseEvent => ({ event: "ping", data: { type: "ping" } });

/** Characters per input_json_delta; Anthropic streams a call's input in pieces, and clients join them (wire shape, not a tunable). */
export const JSON_FRAGMENT_CHARS = 48;

/** Splits serialized tool input into input_json_delta pieces, never inside a UTF-16 surrogate pair. */
export function jsonFragments(json: string, size = JSON_FRAGMENT_CHARS): string[] {
  const parts: string[] = [];
  let at = 0;
  while (at < json.length) {
    let end = Math.min(json.length, at + size);
    const code = json.charCodeAt(end - 1);
    // A high surrogate at the cut would leave each half an invalid string for non-JS clients.
    if (end < json.length && code >= 0xd800 && code <= 0xdbff) end++;
    parts.push(json.slice(at, end));
    at = end;
  }
  return parts.length ? parts : ["{}"];
}

type OpenBlock = { kind: "text" } | { kind: "thinking"; text: string };

/** Stateful, synchronous converter; feed it engine events in order. */
export class StreamConverter {
  private started = false;
  private finished = false;
  private cancelled = false;
  private open: OpenBlock | null = null;
  private index = -1;
  private sawToolCall = false;
  private promptTokens = 0;
  private cachedTokens = 0;

  constructor(private readonly opts: StreamConverterOptions) {}

  get isStarted(): boolean {
    return this.started;
  }

  /** True once the stream ended: message_stop, or the error event of a cancelled generation. */
  get isFinished(): boolean {
    return this.finished;
  }

  /** True when the generation was cancelled: the stream ended with `event: error`, not message_stop. */
  get isCancelled(): boolean {
    return this.cancelled;
  }

  /** message_start, once. Usage is known only if the engine already said `started`. */
  start(): SseEvent[] {
    if (this.started) return [];
    this.started = true;
    const message = {
      id: this.opts.messageId,
      type: "message",
      role: "assistant",
      model: this.opts.model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: usageOf(this.promptTokens, this.cachedTokens, 0),
    };
    return [{ event: "message_start", data: { type: "message_start", message } }];
  }

  /** A keep-alive ping (the route sends one while waiting on a slow prompt). */
  ping(): SseEvent[] {
    return this.finished ? [] : [...this.start(), pingEvent()];
  }

  /** Converts one engine event; starts the message first if needed. Events after done are dropped. */
  push(ev: EngineEvent): SseEvent[] {
    if (this.finished) return [];
    if (ev.type === "started" && !this.started) {
      this.promptTokens = ev.promptTokens;
      this.cachedTokens = ev.cachedTokens;
    }
    const out = this.start();
    switch (ev.type) {
      case "started":
      case "progress":
        out.push(pingEvent());
        break;
      case "text":
        if (ev.text) this.text(out, ev.text);
        break;
      case "thinking":
        if (ev.text) this.thinking(out, ev.text);
        break;
      case "tool_call":
        this.toolCall(out, ev);
        break;
      case "done":
        this.done(out, ev);
        break;
    }
    return out;
  }

  private text(out: SseEvent[], text: string): void {
    if (this.open?.kind !== "text") {
      this.closeBlock(out);
      this.openBlock(out, { kind: "text" }, { type: "text", text: "" });
    }
    out.push(this.delta({ type: "text_delta", text }));
  }

  private thinking(out: SseEvent[], text: string): void {
    if (this.open?.kind !== "thinking") {
      this.closeBlock(out);
      this.openBlock(out, { kind: "thinking", text: "" }, { type: "thinking", thinking: "", signature: "" });
    }
    const block = this.open as { kind: "thinking"; text: string };
    block.text += text;
    if (!this.opts.omitThinking) out.push(this.delta({ type: "thinking_delta", thinking: text }));
  }

  private toolCall(out: SseEvent[], ev: Extract<EngineEvent, { type: "tool_call" }>): void {
    this.closeBlock(out);
    this.sawToolCall = true;
    this.index++;
    out.push({
      event: "content_block_start",
      data: { type: "content_block_start", index: this.index, content_block: { type: "tool_use", id: newToolUseId(), name: ev.name, input: {} } },
    });
    for (const part of jsonFragments(JSON.stringify(ev.arguments ?? {})))
      out.push(this.delta({ type: "input_json_delta", partial_json: part }));
    out.push({ event: "content_block_stop", data: { type: "content_block_stop", index: this.index } });
  }

  private done(out: SseEvent[], ev: Extract<EngineEvent, { type: "done" }>): void {
    const stopReason = stopReasonOf(ev.finishReason, this.sawToolCall);
    this.finished = true;
    if (stopReason === null) {
      // Cut short: end as Anthropic does mid-stream, with an error clients retry; no message_stop.
      this.cancelled = true;
      out.push(errorEvent("overloaded_error", CANCELLED_MESSAGE, this.opts.requestId ?? null));
      return;
    }
    this.closeBlock(out);
    out.push({
      event: "message_delta",
      data: {
        type: "message_delta",
        delta: { stop_reason: stopReason, stop_sequence: stopReason === "stop_sequence" ? (ev.stopSequence ?? null) : null },
        // Cache writes are known only at the end (the worker stores after generating):
        // message_start says 0, this cumulative usage has the final split.
        usage: usageOf(ev.promptTokens, ev.cachedTokens, ev.completionTokens, ev.cacheCreatedTokens ?? 0),
      },
    });
    out.push({ event: "message_stop", data: { type: "message_stop" } });
  }

  private openBlock(out: SseEvent[], block: OpenBlock, contentBlock: Record<string, unknown>): void {
    this.index++;
    this.open = block;
    out.push({
      event: "content_block_start",
      data: { type: "content_block_start", index: this.index, content_block: contentBlock },
    });
  }

  private closeBlock(out: SseEvent[]): void {
    if (!this.open) return;
    if (this.open.kind === "thinking")
      out.push(this.delta({ type: "signature_delta", signature: thinkingSignature(this.open.text) }));
    out.push({ event: "content_block_stop", data: { type: "content_block_stop", index: this.index } });
    this.open = null;
  }

  private delta(delta: Record<string, unknown>): SseEvent {
    return { event: "content_block_delta", data: { type: "content_block_delta", index: this.index, delta } };
  }
}
