/**
 * Small local models often answer a tool result by making the very call it answers again
 * (Qwen2.5-Coder 0.5B and 1.5B do so at temperature 0, and under llama-server too). When a
 * generation's first visible output repeats a call whose result ends the conversation (the same
 * tool, the same values for the inputs the tool declares), that call is dropped and the turn is
 * generated once more from the same conversation with its tool history written as plain text
 * and no tools offered, so the model answers from the result.
 */
import type { ChatMessage, ChatToolCall, EngineEvent, GenerateRequest, ToolSpec } from "../engine/types";
import type { Logger } from "../log";
import { callSignature } from "./call-signature";

type Run = (req: GenerateRequest, signal: AbortSignal) => AsyncIterable<EngineEvent>;

// The inputs a tool declares: small models add keys of their own to a repeat ({city, weather: "sunny"}).
function declaredInputs(tools: readonly ToolSpec[] | undefined): (name: string, args: Record<string, unknown>) => unknown {
  const declared = new Map<string, Set<string>>();
  for (const t of tools ?? []) {
    const { properties, additionalProperties } = t.function.parameters as { properties?: unknown; additionalProperties?: unknown };
    if (properties && typeof properties === "object" && additionalProperties !== true) declared.set(t.function.name, new Set(Object.keys(properties)));
  }
  return (name, args) => {
    const keys = declared.get(name);
    return keys ? Object.fromEntries(Object.entries(args).filter(([k]) => keys.has(k))) : args;
  };
}

/** Signatures of the calls the conversation's last assistant turn made and that were answered. */
export function answeredCalls(messages: readonly ChatMessage[], tools?: readonly ToolSpec[]): Set<string> {
  const inputs = declaredInputs(tools);
  let results = 0;
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i] as ChatMessage;
    if (m.role === "tool") results++;
    else if (m.role === "assistant") {
      if (!results || !m.tool_calls?.length) break;
      return new Set(m.tool_calls.map((c) => callSignature(c.function.name, inputs(c.function.name, c.function.arguments))));
    } else if (m.role !== "user") break;
  }
  return new Set();
}

const callLine = (c: ChatToolCall) => `I called the tool ${c.function.name} with ${JSON.stringify(c.function.arguments)}.`;

/** The conversation with tool calls and results as ordinary turns (adjacent user turns joined). */
export function toolHistoryAsText(messages: readonly ChatMessage[]): ChatMessage[] {
  const names = new Map<string, string>();
  const out: ChatMessage[] = [];
  const push = (role: ChatMessage["role"], content: string) => {
    const last = out[out.length - 1];
    if (role === "user" && last?.role === "user") last.content = `${last.content}\n\n${content}`;
    else out.push({ role, content });
  };
  for (const m of messages) {
    if (m.role === "assistant" && m.tool_calls?.length) {
      for (const c of m.tool_calls) names.set(c.id, c.function.name);
      push("assistant", [m.content.trim(), ...m.tool_calls.map(callLine)].filter(Boolean).join("\n"));
    } else if (m.role === "tool") {
      const name = (m.tool_call_id && names.get(m.tool_call_id)) || m.name || "tool";
      push("user", `The tool ${name} returned:\n${m.content}`);
    } else {
      push(m.role, m.content);
    }
  }
  return out;
}

/** The request for the second try: same conversation and sampling, tool history as text, no tools. */
function answerRequest(req: GenerateRequest): GenerateRequest {
  const { tools: _t, toolChoice: _c, cachePrefix: _p, parallelToolCalls: _q, ...rest } = req;
  return { ...rest, messages: toolHistoryAsText(req.messages), continueFinal: false };
}

const forced = (req: GenerateRequest) => req.toolChoice !== undefined && req.toolChoice !== "auto";

/**
 * `run(req)`'s events, except that a first call repeating an answered one is replaced by the
 * answer of a second generation (see the file's comment). Started and progress events pass at
 * once; leading whitespace is held only until something visible decides.
 */
export function answerRepeatedCalls(req: GenerateRequest, signal: AbortSignal, run: Run, logger?: Logger): AsyncIterable<EngineEvent> {
  const answered = forced(req) ? new Set<string>() : answeredCalls(req.messages, req.tools);
  // Nothing to watch for: the engine's own iterable, with no layer in between.
  return answered.size === 0 ? run(req, signal) : watched(req, signal, run, answered, logger);
}

async function* watched(req: GenerateRequest, signal: AbortSignal, run: Run, answered: Set<string>, logger?: Logger): AsyncGenerator<EngineEvent> {
  const inputs = declaredInputs(req.tools);
  const ac = new AbortController();
  const abort = () => ac.abort();
  signal.addEventListener("abort", abort, { once: true });
  let started: Extract<EngineEvent, { type: "started" }> | undefined;
  let repeated: string | undefined;
  try {
    const held: EngineEvent[] = [];
    let passing = false;
    for await (const ev of run(req, ac.signal)) {
      if (passing || ev.type === "progress") {
        yield ev;
        continue;
      }
      if (ev.type === "started") started = ev;
      else if (ev.type === "text" && !ev.text.trim()) {
        held.push(ev);
        continue;
      } else if (ev.type === "tool_call" && answered.has(callSignature(ev.name, inputs(ev.name, ev.arguments)))) {
        repeated = ev.name;
        break; // ends the first generation (its finally cancels it)
      } else {
        passing = true;
        yield* held.splice(0);
      }
      yield ev;
    }
  } finally {
    if (repeated !== undefined) ac.abort();
    signal.removeEventListener("abort", abort);
  }
  if (repeated === undefined || signal.aborted) return;
  logger?.info("the model repeated the tool call it has the result of; answering from the result", { requestId: req.requestId, tool: repeated });
  yield* secondTry(req, signal, run, started);
}

async function* secondTry(req: GenerateRequest, signal: AbortSignal, run: Run, first: Extract<EngineEvent, { type: "started" }> | undefined): AsyncGenerator<EngineEvent> {
  for await (const ev of run(answerRequest(req), signal)) {
    if (ev.type === "started" && first) continue; // the client's prompt is the first one
    if (ev.type === "progress") continue;
    if (ev.type === "done" && first) {
      // Usage describes the client's prompt; the shorter text-only prompt is not cached for it.
      yield { ...ev, promptTokens: first.promptTokens, cachedTokens: first.cachedTokens, cacheCreatedTokens: 0 };
      continue;
    }
    yield ev;
  }
}
