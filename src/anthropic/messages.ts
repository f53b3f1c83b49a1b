/**
 * One /v1/messages generation, as JSON or as SSE: the repeat guards in front of the engine, the
 * abort links (client gone, shutdown), the SSE head start and pings. routes.ts wires it to HTTP.
 */
import { sse } from "elysia";
import type { EngineEvent, GenerateRequest, InferenceEngine } from "../engine/types";
import type { Logger } from "../log";
import { aggregate } from "./aggregate";
import { mapError, newId, ServiceUnavailableError } from "./errors";
import { answerRepeatedCalls } from "./answered-calls";
import { repeatedToolCall, repeatReply, repeatReplyText } from "./repeat-guard";
import type { MessagesRequestT } from "./schemas";
import { CANCELLED_MESSAGE, errorEvent, type SseEvent, StreamConverter } from "./stream";
import { thinkingOmitted } from "./translate";

/** SSE timing (src/config.ts streamDefaults). */
export interface StreamTiming {
  /** Wait this long for the engine's first event before committing to the stream, so that
   *  refusals (prompt too long, overloaded) still get a JSON status. */
  headStartMs: number;
  /** Ping this often while the engine is silent (queue, long prefill). */
  pingIntervalMs: number;
}

/** What a generation runs on. */
export interface MessagesDeps {
  engine: InferenceEngine;
  clock: () => number;
  logger?: Logger;
  stream: StreamTiming;
  /** Identical consecutive tool-call turns answered with a text turn instead (0: off). */
  repeatToolLimit: number;
  /** A first call repeating the one just answered is dropped and the turn generated again (answered-calls.ts). */
  answerRepeatedCalls: boolean;
  /** retry-after of the 503 for a generation cancelled before its first byte. */
  cancelledRetryAfterSeconds: number;
}

/** One request's generation: the parsed body, the engine request, and what may abort it. */
export interface MessageCall {
  body: MessagesRequestT;
  req: GenerateRequest;
  request: Request;
  /** Aborted when a shutdown ends open work. */
  shutdown: AbortSignal | undefined;
}

const TICK = Symbol("tick");

const isCancelledDone = (ev: EngineEvent) => ev.type === "done" && ev.finishReason === "cancelled";

// Resolves with the promise's value, or TICK after `ms` (never, if ms is not finite).
function within<T>(p: Promise<T>, ms: number): Promise<T | typeof TICK> {
  if (!Number.isFinite(ms)) return p;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tick = new Promise<typeof TICK>((resolve) => (timer = setTimeout(() => resolve(TICK), Math.max(0, ms))));
  return Promise.race([p, tick]).finally(() => clearTimeout(timer));
}

// Aborts `ac` when the client leaves or a shutdown ends open work (`shutdown`); returns the unlink.
function linkAbort(ac: AbortController, request: Request, shutdown: AbortSignal | undefined): () => void {
  const signals = [request.signal, shutdown].filter((s): s is AbortSignal => !!s);
  const abort = () => ac.abort();
  for (const s of signals) {
    if (s.aborted) ac.abort();
    else s.addEventListener("abort", abort, { once: true });
  }
  return () => {
    for (const s of signals) s.removeEventListener("abort", abort);
  };
}

/** The engine's generation, or the short reply that ends a tool-call loop (repeat-guard.ts). */
function generate(deps: MessagesDeps, req: GenerateRequest, signal: AbortSignal): AsyncIterable<EngineEvent> {
  const limit = deps.repeatToolLimit;
  const tool = repeatedToolCall(req.messages, limit);
  if (tool === null) {
    if (!deps.answerRepeatedCalls) return deps.engine.generate(req, signal);
    return answerRepeatedCalls(req, signal, (r, s) => deps.engine.generate(r, s), deps.logger);
  }
  deps.logger?.warn("the same tool call repeated; answering without generating", { requestId: req.requestId, tool, limit });
  return repeatReply(repeatReplyText(tool, limit), () => deps.engine.countTokens(req));
}

const emit = (events: SseEvent[]) => events.map((e) => sse(e));

/** Streams one generation. Errors before the first yield propagate (JSON status); after, `event: error`. */
export async function* streamMessage(deps: MessagesDeps, call: MessageCall) {
  const { body, req } = call;
  const { headStartMs, pingIntervalMs } = deps.stream;
  const started = deps.clock();
  const conv = new StreamConverter({ messageId: newId("msg_"), model: body.model, omitThinking: thinkingOmitted(body), requestId: req.requestId });
  const ac = new AbortController();
  // Elysia only closes our generator at its next yield; the signal reaches the engine at once.
  const unlink = linkAbort(ac, call.request, call.shutdown);
  const it = generate(deps, req, ac.signal)[Symbol.asyncIterator]();
  let pending: Promise<IteratorResult<EngineEvent>> | null = null;
  let outcome = "incomplete";
  try {
    pending = it.next();
    const first = headStartMs > 0 ? await within(pending, headStartMs) : TICK;
    if (first === TICK) {
      yield* emit(conv.ping());
    } else {
      pending = null;
      if (first.done) throw new Error("generation ended before it started");
      // Cancelled before the first byte: a plain 503, as for any refusal before the stream.
      if (isCancelledDone(first.value)) throw new ServiceUnavailableError(CANCELLED_MESSAGE, deps.cancelledRetryAfterSeconds);
      yield* emit(conv.push(first.value));
    }
    while (!conv.isFinished) {
      pending ??= it.next();
      const r = await within(pending, pingIntervalMs);
      if (r === TICK) {
        yield* emit(conv.ping());
        continue;
      }
      pending = null;
      if (r.done) throw new Error("generation ended without a done event");
      yield* emit(conv.push(r.value));
    }
    outcome = !conv.isCancelled ? "done" : ac.signal.aborted ? "aborted" : "cancelled";
  } catch (err) {
    // Client gone or emergency shutdown (whose guard writes its own error event).
    if (ac.signal.aborted) {
      outcome = "aborted";
      return;
    }
    if (!conv.isStarted) throw err;
    const mapped = mapError(err, req.requestId);
    outcome = `error:${mapped.body.error.type}`;
    deps.logger?.warn("stream failed after start", { requestId: req.requestId, status: mapped.status, error: mapped.body.error.message });
    yield sse(errorEvent(mapped.body.error.type, mapped.body.error.message, req.requestId));
  } finally {
    unlink();
    if (outcome !== "done") {
      ac.abort();
      if (outcome === "incomplete") outcome = "aborted";
    }
    pending?.catch(() => {});
    it.return?.()?.catch(() => {});
    deps.logger?.info("messages stream", { requestId: req.requestId, model: body.model, outcome, ms: deps.clock() - started });
  }
}

/** Runs one generation to its end and answers it as one Message. */
export async function jsonMessage(deps: MessagesDeps, call: MessageCall) {
  const { body, req } = call;
  const started = deps.clock();
  const ac = new AbortController();
  const unlink = linkAbort(ac, call.request, call.shutdown);
  let finished = false;
  try {
    const message = await aggregate(generate(deps, req, ac.signal), {
      messageId: newId("msg_"),
      model: body.model,
      omitThinking: thinkingOmitted(body),
      requestId: req.requestId,
      cancelledRetryAfterSeconds: deps.cancelledRetryAfterSeconds,
    });
    finished = true;
    deps.logger?.info("messages", { requestId: req.requestId, model: body.model, stop: message.stop_reason, ms: deps.clock() - started });
    return message;
  } finally {
    unlink();
    if (!finished) ac.abort();
  }
}
