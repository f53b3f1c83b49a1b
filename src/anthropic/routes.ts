/**
 * The Anthropic API routes: /v1/messages (JSON and SSE), count_tokens, models.
 * Translation and event conversion live elsewhere; this file only wires them to the engine.
 */
import { Elysia, sse } from "elysia";
import type { EngineEvent, GenerateRequest, InferenceEngine } from "../engine/types";
import { type RequestScope, requestScope } from "../http/request-scope";
import type { Logger } from "../log";
import { aggregate } from "./aggregate";
import { type AliasRule, CLAUDE_MODEL_ID, listedModelIds, resolveModel } from "./aliases";
import { mapError, newId, newRequestId, ServiceUnavailableError } from "./errors";
import { anthropicModels, type MessagesRequestT, MessagesQuery, type ModelInfoT } from "./schemas";
import { DEFAULT_REPEAT_TOOL_LIMIT, repeatedToolCall, repeatReply, repeatReplyText } from "./repeat-guard";
import { CANCELLED_MESSAGE, errorEvent, type SseEvent, StreamConverter } from "./stream";
import { thinkingOmitted, toGenerateRequest, toPromptInput, type TranslateOptions } from "./translate";

/** SSE timing: how long to hold the status open, and how often to ping. */
export interface StreamTiming {
  /** Wait this long for the engine's first event before committing to the stream, so that
   *  refusals (prompt too long, overloaded) still get a JSON status. Default 2000. */
  headStartMs?: number;
  /** Ping this often while the engine is silent (queue, long prefill); Bun's idle timeout
   *  would otherwise close the connection. Default 5000. */
  pingIntervalMs?: number;
}

/** What the Anthropic routes are built from. */
export interface AnthropicRoutesDeps {
  engine: InferenceEngine;
  aliases: readonly AliasRule[];
  clock: () => number;
  logger?: Logger;
  stream?: StreamTiming;
  /** Identical consecutive tool-call turns answered with a text turn instead (0: off; default 3). */
  repeatToolLimit?: number;
  /** The app's request scope (request id, in-flight entry); default a scope of its own. */
  scope?: RequestScope;
}

const TICK = Symbol("tick");

const isCancelledDone = (ev: EngineEvent) => ev.type === "done" && ev.finishReason === "cancelled";

// An OpenAPI reference to one of the models registered with `.model()`.
const schemaRef = (name: string) => ({ $ref: `#/components/schemas/${name}` });

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

/** POST /v1/messages (JSON and SSE), POST /v1/messages/count_tokens, GET /v1/models[/:id]. */
export function anthropicRoutes(deps: AnthropicRoutesDeps) {
  const { engine, aliases, clock, logger } = deps;
  const headStartMs = deps.stream?.headStartMs ?? 2000;
  const pingIntervalMs = deps.stream?.pingIntervalMs ?? 5000;
  const createdAt = new Date(clock()).toISOString();
  const served = () => engine.model()?.id ?? "pensieve";
  const repeatLimit = deps.repeatToolLimit ?? DEFAULT_REPEAT_TOOL_LIMIT;

  /** The engine's generation, or the short reply that ends a tool-call loop (repeat-guard.ts). */
  function generate(req: GenerateRequest, signal: AbortSignal): AsyncIterable<EngineEvent> {
    const tool = repeatedToolCall(req.messages, repeatLimit);
    if (tool === null) return engine.generate(req, signal);
    logger?.warn("the same tool call repeated; answering without generating", { requestId: req.requestId, tool, limit: repeatLimit });
    return repeatReply(repeatReplyText(tool, repeatLimit), () => engine.countTokens(req));
  }

  function translateOptions(requested: string): TranslateOptions {
    const info = engine.model();
    const opts: TranslateOptions = {
      model: resolveModel(requested, aliases, served()),
      requestedModel: requested,
      supportsVision: info?.supportsVision ?? false,
    };
    if (info?.contextLength) opts.contextLength = info.contextLength;
    return opts;
  }

  /** Streams one generation. Errors before the first yield propagate (JSON status); after, `event: error`. */
  async function* streamMessage(body: MessagesRequestT, req: GenerateRequest, request: Request, shutdown: AbortSignal | undefined) {
    const started = clock();
    const conv = new StreamConverter({ messageId: newId("msg_"), model: body.model, omitThinking: thinkingOmitted(body), requestId: req.requestId });
    const ac = new AbortController();
    // Elysia only closes our generator at its next yield; the signal reaches the engine at once.
    const unlink = linkAbort(ac, request, shutdown);
    const it = generate(req, ac.signal)[Symbol.asyncIterator]();
    let pending: Promise<IteratorResult<EngineEvent>> | null = null;
    let outcome = "incomplete";
    const emit = (events: SseEvent[]) => events.map((e) => sse(e));
    try {
      pending = it.next();
      const first = headStartMs > 0 ? await within(pending, headStartMs) : TICK;
      if (first === TICK) {
        yield* emit(conv.ping());
      } else {
        pending = null;
        if (first.done) throw new Error("generation ended before it started");
        // Cancelled before the first byte: a plain 503, as for any refusal before the stream.
        if (isCancelledDone(first.value)) throw new ServiceUnavailableError(CANCELLED_MESSAGE);
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
      logger?.warn("stream failed after start", { requestId: req.requestId, status: mapped.status, error: mapped.body.error.message });
      yield sse(errorEvent(mapped.body.error.type, mapped.body.error.message, req.requestId));
    } finally {
      unlink();
      if (outcome !== "done") {
        ac.abort();
        if (outcome === "incomplete") outcome = "aborted";
      }
      pending?.catch(() => {});
      it.return?.()?.catch(() => {});
      logger?.info("messages stream", { requestId: req.requestId, model: body.model, outcome, ms: clock() - started });
    }
  }

  async function jsonMessage(body: MessagesRequestT, req: GenerateRequest, request: Request, shutdown: AbortSignal | undefined) {
    const started = clock();
    const ac = new AbortController();
    const unlink = linkAbort(ac, request, shutdown);
    let finished = false;
    try {
      const message = await aggregate(generate(req, ac.signal), {
        messageId: newId("msg_"),
        model: body.model,
        omitThinking: thinkingOmitted(body),
        requestId: req.requestId,
      });
      finished = true;
      logger?.info("messages", { requestId: req.requestId, model: body.model, stop: message.stop_reason, ms: clock() - started });
      return message;
    } finally {
      unlink();
      if (!finished) ac.abort();
    }
  }

  function modelInfo(id: string): ModelInfoT {
    const target = resolveModel(id, aliases, served());
    const display = id === target ? id : `${id} (served by ${target}, Pensieve)`;
    return { type: "model", id, display_name: display, created_at: createdAt };
  }

  const errorDoc = (description: string) => ({ description, content: { "application/json": { schema: schemaRef("ErrorResponse") } } });
  const errors = {
    400: errorDoc("invalid_request_error (also: prompt is too long)"),
    401: errorDoc("authentication_error"),
    529: errorDoc("overloaded_error, with retry-after"),
  };

  return new Elysia({ name: "pensieve.anthropic" })
    .use(deps.scope ?? requestScope(newRequestId))
    .model(anthropicModels)
    .post(
      "/v1/messages",
      async function* ({ body, request, set, requestId, work }) {
        const req = toGenerateRequest(body, { ...translateOptions(body.model), requestId });
        const shutdown = work?.controller.signal;
        if (!body.stream) return await jsonMessage(body, req, request, shutdown);
        // Anthropic's content type; Elysia would otherwise send plain text/event-stream.
        set.headers["content-type"] = "text/event-stream; charset=utf-8";
        yield* streamMessage(body, req, request, shutdown);
      },
      {
        body: "MessagesRequest",
        query: MessagesQuery,
        detail: {
          tags: ["Anthropic"],
          summary: "Create a message",
          description:
            "Anthropic Messages API. With `stream: true` the answer is SSE (text/event-stream) with Anthropic's " +
            "event sequence; otherwise one Message JSON. `?beta=true` is accepted.",
          responses: {
            200: {
              description: "A Message, or an SSE stream of StreamEvent payloads",
              content: {
                "application/json": { schema: schemaRef("Message") },
                "text/event-stream": { schema: schemaRef("StreamEvent") },
              },
            },
            ...errors,
          },
        },
      },
    )
    .post(
      "/v1/messages/count_tokens",
      async ({ body, set }) => {
        const input = toPromptInput(body, translateOptions(body.model));
        if (!engine.countTokensDetailed) return { input_tokens: await engine.countTokens(input) };
        // Upstreams without a tokenizer endpoint can only estimate; say which it is.
        const { count, exact, source } = await engine.countTokensDetailed(input);
        set.headers["x-pensieve-token-count"] = `${exact ? "exact" : "estimate"}; source=${source}`;
        return { input_tokens: count };
      },
      {
        body: "CountTokensRequest",
        query: MessagesQuery,
        detail: {
          tags: ["Anthropic"],
          summary: "Count tokens",
          description: "Exact count with the model's own tokenizer and chat template (with an OpenAI upstream lacking a tokenizer, an estimate labelled by the x-pensieve-token-count header).",
          responses: {
            200: { description: "Token count", content: { "application/json": { schema: schemaRef("CountTokensResponse") } } },
            ...errors,
          },
        },
      },
    )
    .get(
      "/v1/models",
      () => {
        const data = listedModelIds(aliases, served()).map(modelInfo);
        return { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null };
      },
      {
        detail: {
          tags: ["Anthropic"],
          summary: "List models",
          description: `The served model, also as "${CLAUDE_MODEL_ID}" and under each exact alias.`,
          responses: { 200: { description: "Models", content: { "application/json": { schema: schemaRef("ModelList") } } } },
        },
      },
    )
    .get("/v1/models/:id", ({ params }) => modelInfo(params.id), {
      detail: {
        tags: ["Anthropic"],
        summary: "Get a model",
        description: "Any name resolves through the alias map to the served model; the id is echoed.",
        responses: { 200: { description: "Model", content: { "application/json": { schema: schemaRef("ModelInfo") } } } },
      },
    });
}
