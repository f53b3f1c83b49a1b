/**
 * The Anthropic API routes: /v1/messages (JSON and SSE), count_tokens, models. Translation,
 * generation and event conversion live elsewhere; this file only wires them.
 */
import { Elysia } from "elysia";
import type { InferenceEngine } from "../engine/types";
import { type RequestScope, requestScope } from "../http/request-scope";
import { type AliasRule, CLAUDE_MODEL_ID, listedModelIds, resolveModel } from "./aliases";
import { newRequestId } from "./errors";
import { jsonMessage, type MessagesDeps, streamMessage } from "./messages";
import { anthropicModels, type CountTokensRequestT, MessagesQuery, type ModelInfoT } from "./schemas";
import { toGenerateRequest, toPromptInput, type TranslateOptions } from "./translate";

export type { StreamTiming } from "./messages";

/** What the Anthropic routes are built from. */
export interface AnthropicRoutesDeps extends MessagesDeps {
  aliases: readonly AliasRule[];
  /** The temperature of requests that set none (--temperature). */
  temperature?: number;
  /** The app's request scope (request id, in-flight entry); default a scope of its own. */
  scope?: RequestScope;
}

// An OpenAPI reference to one of the models registered with `.model()`.
const schemaRef = (name: string) => ({ $ref: `#/components/schemas/${name}` });

const errorDoc = (description: string) => ({ description, content: { "application/json": { schema: schemaRef("ErrorResponse") } } });
const ERROR_DOCS = {
  400: errorDoc("invalid_request_error (also: prompt is too long)"),
  401: errorDoc("authentication_error"),
  529: errorDoc("overloaded_error, with retry-after"),
};

// The served model's id, as the alias map's "default" target.
const servedId = (engine: InferenceEngine) => engine.model()?.id ?? "pensieve";

// How the engine's model shapes translation: the alias target, context and vision.
function translateOptions(engine: InferenceEngine, aliases: readonly AliasRule[], requested: string, temperature?: number): TranslateOptions {
  const info = engine.model();
  const opts: TranslateOptions = {
    model: resolveModel(requested, aliases, servedId(engine)),
    requestedModel: requested,
    supportsVision: info?.supportsVision ?? false,
  };
  if (info?.contextLength) opts.contextLength = info.contextLength;
  if (temperature !== undefined) opts.temperature = temperature;
  return opts;
}

const MESSAGES_DOC = {
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
    ...ERROR_DOCS,
  },
};

const COUNT_TOKENS_DOC = {
  tags: ["Anthropic"],
  summary: "Count tokens",
  description: "Exact count with the model's own tokenizer and chat template (with an OpenAI upstream lacking a tokenizer, an estimate labelled by the x-pensieve-token-count header).",
  responses: {
    200: { description: "Token count", content: { "application/json": { schema: schemaRef("CountTokensResponse") } } },
    ...ERROR_DOCS,
  },
};

const LIST_MODELS_DOC = {
  tags: ["Anthropic"],
  summary: "List models",
  description: `The served model, also as "${CLAUDE_MODEL_ID}" and under each exact alias.`,
  responses: { 200: { description: "Models", content: { "application/json": { schema: schemaRef("ModelList") } } } },
};

const GET_MODEL_DOC = {
  tags: ["Anthropic"],
  summary: "Get a model",
  description: "Any name resolves through the alias map to the served model; the id is echoed.",
  responses: { 200: { description: "Model", content: { "application/json": { schema: schemaRef("ModelInfo") } } } },
};

// The engine's count, labelled when it is only an estimate.
async function countTokens(deps: AnthropicRoutesDeps, body: CountTokensRequestT, headers: Record<string, unknown>) {
  const { engine, aliases } = deps;
  const input = toPromptInput(body, translateOptions(engine, aliases, body.model));
  if (!engine.countTokensDetailed) return { input_tokens: await engine.countTokens(input) };
  // Upstreams without a tokenizer endpoint can only estimate; say which it is.
  const { count, exact, source } = await engine.countTokensDetailed(input);
  headers["x-pensieve-token-count"] = `${exact ? "exact" : "estimate"}; source=${source}`;
  return { input_tokens: count };
}

// The served model under a requested name, and the list of every name the alias map gives it.
function modelCatalog(deps: Pick<AnthropicRoutesDeps, "engine" | "aliases" | "clock">) {
  const { engine, aliases } = deps;
  const createdAt = new Date(deps.clock()).toISOString();
  const info = (id: string): ModelInfoT => {
    const target = resolveModel(id, aliases, servedId(engine));
    const display = id === target ? id : `${id} (served by ${target}, Pensieve)`;
    return { type: "model", id, display_name: display, created_at: createdAt };
  };
  const list = () => {
    const data = listedModelIds(aliases, servedId(engine)).map(info);
    return { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null };
  };
  return { info, list };
}

/**
 * POST /v1/messages (one Message JSON, or Anthropic's SSE event sequence with `stream: true`),
 * POST /v1/messages/count_tokens, GET /v1/models[/:id]. One plugin: each nested plugin made
 * Elysia register these routes and their validators again, ~1.5 MiB of resident memory.
 */
export function anthropicRoutes(deps: AnthropicRoutesDeps) {
  const scope = deps.scope ?? requestScope(newRequestId);
  const models = modelCatalog(deps);
  return new Elysia({ name: "pensieve.anthropic" })
    .use(scope)
    .model(anthropicModels)
    .post(
      "/v1/messages",
      async function* ({ body, request, set, requestId, work }) {
        const req = toGenerateRequest(body, { ...translateOptions(deps.engine, deps.aliases, body.model, deps.temperature), requestId });
        const call = { body, req, request, shutdown: work?.controller.signal };
        if (!body.stream) return await jsonMessage(deps, call);
        // Anthropic's content type; Elysia would otherwise send plain text/event-stream.
        set.headers["content-type"] = "text/event-stream; charset=utf-8";
        yield* streamMessage(deps, call);
      },
      { body: "MessagesRequest", query: MessagesQuery, detail: MESSAGES_DOC },
    )
    .post("/v1/messages/count_tokens", ({ body, set }) => countTokens(deps, body, set.headers), {
      body: "CountTokensRequest",
      query: MessagesQuery,
      detail: COUNT_TOKENS_DOC,
    })
    .get("/v1/models", () => models.list(), { detail: LIST_MODELS_DOC })
    .get("/v1/models/:id", ({ params }) => models.info(params.id), { detail: GET_MODEL_DOC });
}
