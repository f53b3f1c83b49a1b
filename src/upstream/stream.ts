/**
 * OpenAI chat-completion chunks -> EngineEvents. Pure and incremental: feed SSE items in
 * order, then call finish(). Tool-call argument deltas are assembled per index and emitted
 * whole, because EngineEvent carries parsed arguments.
 */
import type { EngineEvent, FinishReason } from "../engine/types";
import type { OpenAIChunk, OpenAIToolCallDelta } from "./openai-types";
import type { SseItem } from "./sse";

// `id` is the upstream's own call id, used only to tell calls apart while they stream in.
interface PendingCall {
  id: string;
  name: string;
  args: string;
}

/** Thrown for an error the upstream reports inside an already-started stream; `detail` is the raw data. */
export class UpstreamStreamError extends Error {
  constructor(readonly detail: string) {
    super(`upstream reported an error mid-stream: ${detail.slice(0, 500)}`);
  }

  /** The HTTP status the upstream gave the error in its data (500 if none). */
  get status(): number {
    try {
      const j = JSON.parse(this.detail) as { code?: unknown; error?: { code?: unknown } };
      const code = j.error?.code ?? j.code;
      if (typeof code === "number" && code >= 400 && code < 600) return code;
    } catch {
      // plain text
    }
    return 500;
  }
}

/** A non-streaming chat.completion body as one SSE item the ChunkAssembler understands. */
export function completionAsChunk(text: string): SseItem {
  let data = text;
  try {
    const j = JSON.parse(text) as { choices?: { message?: unknown; finish_reason?: unknown }[] };
    if (Array.isArray(j.choices)) {
      const choices = j.choices.map((c, index) => ({ index, delta: c.message ?? {}, finish_reason: c.finish_reason ?? "stop" }));
      data = JSON.stringify({ ...j, choices });
    }
  } catch {
    // not JSON: the assembler ignores it and the stream counts as broken
  }
  return { kind: "event", event: "message", data };
}

// Upstream finish reasons that mean the generation was cut short, never a finished answer.
const CANCELLED_FINISH: ReadonlySet<string> = new Set(["abort", "aborted", "cancelled", "canceled"]);

// mlx_lm.server sends `: keepalive 512/2048` comments while it processes the prompt.
const KEEPALIVE_RE = /^keepalive (\d+)\/(\d+)/;

/** Turns one upstream stream's SSE items into EngineEvents; see the module comment. */
export class ChunkAssembler {
  private calls: PendingCall[] = [];
  private byIndex = new Map<number, PendingCall>();
  private finish: string | null = null;
  private stopString: string | undefined;
  private promptTokens: number | undefined;
  private completionTokens: number | undefined;
  private cachedTokens: number | undefined;
  private contentChunks = 0;
  private sawDone = false;

  constructor(
    /** The stop sequences sent, to recognise which one ended generation. */
    private readonly stops: string[] = [],
  ) {}

  /** True once `data: [DONE]` arrived. */
  get done(): boolean {
    return this.sawDone;
  }

  /** True once a choice carried a finish_reason. */
  get finished(): boolean {
    return this.finish !== null;
  }

  /** Consume one SSE item; returns the events it completes. Throws UpstreamStreamError on in-band errors. */
  push(item: SseItem): EngineEvent[] {
    if (item.kind === "comment") {
      const m = item.text.match(KEEPALIVE_RE);
      return m ? [{ type: "progress", processed: Number(m[1]), total: Number(m[2]) }] : [];
    }
    const data = item.data.trim();
    if (data === "[DONE]") {
      this.sawDone = true;
      return [];
    }
    if (!data) return [];
    let chunk: OpenAIChunk;
    try {
      chunk = JSON.parse(data) as OpenAIChunk;
    } catch {
      if (item.event === "error") throw new UpstreamStreamError(data);
      return []; // a stray non-JSON line is not worth failing a generation over
    }
    if (item.event === "error" || chunk.error !== undefined || (chunk as { object?: string }).object === "error") {
      throw new UpstreamStreamError(data);
    }
    return this.chunk(chunk);
  }

  private chunk(c: OpenAIChunk): EngineEvent[] {
    const out: EngineEvent[] = [];
    if (c.usage) {
      if (typeof c.usage.prompt_tokens === "number") this.promptTokens = c.usage.prompt_tokens;
      if (typeof c.usage.completion_tokens === "number") this.completionTokens = c.usage.completion_tokens;
      const cached = c.usage.prompt_tokens_details?.cached_tokens;
      if (typeof cached === "number") this.cachedTokens = cached;
    }
    if (typeof c.timings?.cache_n === "number") this.cachedTokens ??= c.timings.cache_n;
    if (c.prompt_progress && typeof c.prompt_progress.total === "number") {
      out.push({ type: "progress", processed: c.prompt_progress.processed ?? 0, total: c.prompt_progress.total });
    }
    for (const choice of c.choices ?? []) {
      if ((choice.index ?? 0) !== 0) continue; // Pensieve never asks for n > 1
      const d = choice.delta;
      if (d) {
        const thinking = d.reasoning_content ?? d.reasoning;
        if (thinking) out.push({ type: "thinking", text: thinking });
        if (d.content) {
          this.contentChunks++;
          out.push({ type: "text", text: d.content });
        }
        for (const t of d.tool_calls ?? []) this.toolDelta(t);
      }
      if (choice.finish_reason) {
        this.finish = choice.finish_reason;
        const s = choice.stop_reason ?? choice.matched_stop;
        if (typeof s === "string" && this.stops.includes(s)) this.stopString = s;
      }
    }
    return out;
  }

  private toolDelta(t: OpenAIToolCallDelta): void {
    let call: PendingCall | undefined;
    if (typeof t.index === "number") {
      call = this.byIndex.get(t.index);
      if (!call) {
        call = { id: "", name: "", args: "" };
        this.byIndex.set(t.index, call);
        this.calls.push(call);
      }
    } else {
      // No index (some Ollama builds): a new id starts a call, otherwise continue the last one.
      const last = this.calls.at(-1);
      if (last && (!t.id || t.id === last.id)) call = last;
      else {
        call = { id: "", name: "", args: "" };
        this.calls.push(call);
      }
    }
    if (t.id) call.id = t.id;
    // Some servers repeat the name on every delta; others (rarely) stream it in pieces.
    const name = t.function?.name;
    if (name && name !== call.name) call.name += name;
    if (t.function?.arguments) call.args += t.function.arguments;
  }

  /** End of stream: tool calls, then done. */
  finishEvents(): EngineEvent[] {
    const out: EngineEvent[] = [];
    let validCalls = 0;
    for (const c of this.calls) {
      const args = parseArguments(c.args);
      if (args && c.name) {
        validCalls++;
        // The upstream's id stays here: the API layer mints the id clients see.
        out.push({ type: "tool_call", name: c.name, arguments: args });
      } else {
        // Never crash on a malformed call: show it to the user as text instead.
        out.push({ type: "text", text: `[invalid tool call ${c.name || "(unnamed)"}: ${c.args}]` });
      }
    }
    out.push({
      type: "done",
      finishReason: this.finishReason(validCalls),
      ...(this.stopString !== undefined ? { stopSequence: this.stopString } : {}),
      promptTokens: this.promptTokens ?? 0,
      // Without usage, each content chunk is about one token on every known server.
      completionTokens: this.completionTokens ?? this.contentChunks,
      cachedTokens: this.cachedTokens ?? 0,
    });
    return out;
  }

  private finishReason(validCalls: number): FinishReason {
    // vLLM and SGLang say "abort" for a request they dropped (preempted, shutting down): cut short.
    if (this.finish !== null && CANCELLED_FINISH.has(this.finish.toLowerCase())) return "cancelled";
    if (this.stopString !== undefined) return "stop_sequence";
    if (this.finish === "length") return "length";
    // Valid calls end the turn in tool use whatever the server says: Ollama and older servers
    // say "stop"; a "tool_calls" whose calls were all malformed is a plain stop.
    return validCalls ? "tool_calls" : "stop";
  }
}

/** Parse assembled arguments; "" means no arguments. Tolerates double-encoded JSON. */
export function parseArguments(raw: string): Record<string, unknown> | null {
  if (raw.trim() === "") return {};
  try {
    let v: unknown = JSON.parse(raw);
    if (typeof v === "string") v = JSON.parse(v);
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
