/**
 * One generation request on its way through the engine: waits in the queue,
 * runs in the worker, and buffers events until its consumer pulls them.
 */

import type { EngineEvent, FinishReason, GenerateRequest } from "../engine/types";
import type { WorkerMessage } from "./protocol";
import type { WorkerProcess } from "./worker-process";

export type JobState = "queued" | "running" | "finished";

const FINISH_REASONS: ReadonlySet<string> = new Set(["stop", "length", "stop_sequence", "tool_calls", "cancelled"]);

export class GenerationJob {
  state: JobState = "queued";
  startedAt = 0;
  /** The worker running it and the command id there, once dispatched. */
  worker: WorkerProcess | null = null;
  workerId: string | null = null;
  cancelSent = false;
  /** Set when the consumer left; events are then dropped instead of buffered. */
  detached = false;
  queueTimer: ReturnType<typeof setTimeout> | undefined;
  idleTimer: ReturnType<typeof setTimeout> | undefined;

  private readonly buffer: EngineEvent[] = [];
  private error: Error | null = null;
  private ended = false;
  private wake: (() => void) | null = null;

  constructor(readonly req: GenerateRequest) {}

  deliver(event: EngineEvent): void {
    if (this.ended) return;
    if (!this.detached) this.buffer.push(event);
    if (event.type === "done") this.ended = true;
    this.notify();
  }

  /** Ends the job with an error (thrown to the consumer after buffered events) or quietly. */
  end(error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    if (error && !this.detached) this.error = error;
    this.notify();
  }

  /** Next event; null when the job ended without (more) events; throws the job's error. */
  async take(): Promise<EngineEvent | null> {
    for (;;) {
      const ev = this.buffer.shift();
      if (ev) return ev;
      if (this.error) throw this.error;
      if (this.ended) return null;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }
}

/** The `generate` command's fields. */
export function generatePayload(req: GenerateRequest): Record<string, unknown> {
  return {
    messages: req.messages,
    tools: req.tools,
    enable_thinking: req.enableThinking,
    // Always sent: the worker follows it instead of guessing a prefill from the messages.
    continue_final: req.continueFinal === true,
    max_tokens: req.maxTokens,
    temperature: req.temperature,
    top_p: req.topP,
    top_k: req.topK,
    stop: req.stop,
    tool_choice: req.toolChoice,
    parallel_tool_calls: req.parallelToolCalls,
    cache_prefix: req.cachePrefix && { messages: req.cachePrefix.messages, content_chars: req.cachePrefix.contentChars },
  };
}

/**
 * Maps a worker reply to an engine event. Returns "error" for `error` replies and
 * null for types this server does not know (ignored for forward compatibility).
 */
export function toEngineEvent(msg: WorkerMessage): EngineEvent | "error" | null {
  switch (msg.type) {
    case "started":
      return { type: "started", promptTokens: num(msg.prompt_tokens), cachedTokens: num(msg.cached_tokens) };
    case "progress":
      return { type: "progress", processed: num(msg.processed), total: num(msg.total) };
    case "delta":
      return { type: "text", text: typeof msg.text === "string" ? msg.text : "" };
    case "thinking":
      return { type: "thinking", text: typeof msg.text === "string" ? msg.text : "" };
    case "tool_call":
      return toolCallEvent(msg);
    case "done": {
      const reason = String(msg.finish_reason);
      const done: EngineEvent = {
        type: "done",
        finishReason: (FINISH_REASONS.has(reason) ? reason : "stop") as FinishReason,
        promptTokens: num(msg.prompt_tokens),
        completionTokens: num(msg.completion_tokens),
        cachedTokens: num(msg.cached_tokens),
      };
      if (typeof msg.cache_created_tokens === "number") done.cacheCreatedTokens = num(msg.cache_created_tokens);
      if (typeof msg.stop_sequence === "string") done.stopSequence = msg.stop_sequence;
      return done;
    }
    case "error":
      return "error";
    default:
      return null;
  }
}

/** A tool call; arguments arrive as an object (or, from some parsers, a JSON string). */
function toolCallEvent(msg: WorkerMessage): EngineEvent {
  let args: unknown = msg.arguments;
  if (typeof args === "string") {
    try {
      args = JSON.parse(args);
    } catch {
      args = { raw: args };
    }
  }
  // No id: the API layer mints tool_use ids (an older worker's call_id is ignored).
  return {
    type: "tool_call",
    name: typeof msg.name === "string" ? msg.name : "",
    arguments: typeof args === "object" && args !== null && !Array.isArray(args) ? (args as Record<string, unknown>) : {},
  };
}

function num(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}
