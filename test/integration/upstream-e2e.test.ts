/**
 * `pensieve serve --backend openai` end to end, with real processes on loopback: mlx_lm.server
 * (the installed mlx-lm, tiny model) as the OpenAI-compatible upstream, Pensieve from source in
 * front, driven by the official @anthropic-ai/sdk. Stand-ins (Bun.serve on port 0) play an
 * overloaded upstream, a second routed upstream and a context-length complaint. A recording
 * proxy between Pensieve and mlx_lm.server shows what Pensieve translated. All stopped by pid.
 */
import Anthropic, { APIError } from "@anthropic-ai/sdk";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { realpathSync } from "node:fs";
import { startMlxServer, type MlxServer } from "../support/mlx-server";
import { startRecorder, type Exchange, type Recorder } from "../support/recording-proxy";
import { DEFAULT_TOKEN, type RunningServer, startServer, tinyModelDir } from "../support/server-process";
import { checkAnthropicStream, type WireEvent } from "../support/sse";
import { sampled } from "../support/sampled";

// Real processes on a 2-core machine.
setDefaultTimeout(180_000);

const MODEL = "claude-opus-5-5";
const HAIKU = "claude-haiku-4-5";
const nonce = () => Math.random().toString(36).slice(2, 10);
const user = (text = `Say something. ${nonce()}`) => [{ role: "user" as const, content: text }];
const textOf = (m: Anthropic.Message) => m.content.map((b) => (b.type === "text" ? b.text : "")).join("");
const sdk = (server: RunningServer) => new Anthropic({ baseURL: server.url, apiKey: DEFAULT_TOKEN, maxRetries: 0 });

async function health(server: RunningServer): Promise<Record<string, any>> {
  const res = await fetch(`${server.url}/health`, { headers: { "x-api-key": DEFAULT_TOKEN } });
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, any>;
}

function post(server: RunningServer, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${server.url}/v1/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": DEFAULT_TOKEN, "anthropic-version": "2023-06-01" },
    body: JSON.stringify(body),
  });
}

async function sdkStream(client: Anthropic, params: Anthropic.MessageStreamParams) {
  const stream = client.messages.stream(params);
  const events: WireEvent[] = [];
  // Cloned as received: the SDK mutates message_start's message into its running snapshot.
  for await (const ev of stream) events.push({ event: ev.type, data: structuredClone(ev) as unknown as WireEvent["data"], raw: "" });
  return { events, final: await stream.finalMessage() };
}

/** The chat-completions calls the recorder saw since index `from`. */
const chatCalls = (rec: Recorder, from = 0): Exchange[] =>
  rec.exchanges.slice(from).filter((x) => x.method === "POST" && x.path === "/v1/chat/completions");

/** The `usage` of an OpenAI SSE body (the include_usage chunk). */
function openAIUsage(sse: string): Record<string, any> | undefined {
  let usage: Record<string, any> | undefined;
  for (const line of sse.split("\n")) {
    if (!line.startsWith("data:")) continue;
    const data = line.slice(5).trim();
    if (data === "[DONE]" || data === "") continue;
    const j = JSON.parse(data) as { usage?: Record<string, any> | null };
    if (j.usage) usage = j.usage;
  }
  return usage;
}

interface OpenAIStandin {
  url: string;
  requests: { path: string; body: any }[];
  stop(): void;
}

/**
 * A stand-in OpenAI-compatible server: /v1/models lists `model`; /v1/chat/completions is
 * answered by `chat` (or, by default, one fixed completion, streamed when asked to).
 */
function startOpenAIStandin(opts: { model: string; maxModelLen?: number; answer?: string; chat?: (body: any, n: number) => Response }): OpenAIStandin {
  const requests: { path: string; body: any }[] = [];
  const answer = opts.answer ?? "fixed answer";
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(r) {
      const path = new URL(r.url).pathname;
      const body = r.method === "POST" ? await r.json().catch(() => null) : undefined;
      requests.push({ path, body });
      if (path === "/v1/models") {
        return Response.json({ object: "list", data: [{ id: opts.model, object: "model", ...(opts.maxModelLen ? { max_model_len: opts.maxModelLen } : {}) }] });
      }
      if (path !== "/v1/chat/completions") return Response.json({ error: { message: "not found" } }, { status: 404 });
      if (opts.chat) return opts.chat(body, requests.filter((q) => q.path === path).length);
      const usage = { prompt_tokens: 11, completion_tokens: 3, total_tokens: 14 };
      if (!body?.stream) {
        return Response.json({
          id: "chatcmpl-standin",
          object: "chat.completion",
          model: opts.model,
          choices: [{ index: 0, message: { role: "assistant", content: answer }, finish_reason: "stop" }],
          usage,
        });
      }
      const chunk = (delta: object, finish: string | null, extra: object = {}) =>
        `data: ${JSON.stringify({ id: "chatcmpl-standin", object: "chat.completion.chunk", model: opts.model, choices: [{ index: 0, delta, finish_reason: finish }], ...extra })}\n\n`;
      const sse =
        chunk({ role: "assistant", content: "" }, null) +
        chunk({ content: answer }, null) +
        chunk({}, "stop") +
        `data: ${JSON.stringify({ id: "chatcmpl-standin", object: "chat.completion.chunk", model: opts.model, choices: [], usage })}\n\n` +
        "data: [DONE]\n\n";
      return new Response(sse, { headers: { "content-type": "text/event-stream" } });
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, requests, stop: () => server.stop(true) };
}

let modelDir: string;
let mlx: MlxServer;
/** Between Pensieve and mlx_lm.server: shows the OpenAI requests Pensieve sends. */
let upstreamRec: Recorder;
let pensieve: RunningServer;
let client: Anthropic;

beforeAll(async () => {
  modelDir = realpathSync(await tinyModelDir());
  mlx = await startMlxServer(modelDir);
  upstreamRec = startRecorder(mlx.url);
  pensieve = await startServer({ args: ["--backend", "openai", "--upstream", `${upstreamRec.url}/v1`] });
  client = sdk(pensieve);
}, 180_000);

afterAll(async () => {
  await pensieve?.stop();
  await upstreamRec?.stop();
  await mlx?.stop();
});

describe("Pensieve in front of mlx_lm.server, through the Anthropic SDK", () => {
  test("/health shows the upstream reachable, with the model it serves", async () => {
    const h = await health(pensieve);
    expect(h).toMatchObject({ status: "ok", ready: true, model: modelDir, engine: { state: "ready" } });
    expect(h.engine.upstream).toHaveLength(1);
    expect(h.engine.upstream[0]).toMatchObject({ url: upstreamRec.url, reachable: true, model: modelDir, lastError: null });
    expect(pensieve.banner).toContain(`upstream ${upstreamRec.url}/v1`);
  });

  test("messages.create: a Message whose stop_reason is max_tokens and whose usage is the upstream's", async () => {
    const before = upstreamRec.exchanges.length;
    const m = await client.messages.create(
      sampled<Anthropic.MessageCreateParamsNonStreaming>({
        model: MODEL,
        max_tokens: 8,
        temperature: 0,
        system: "You are terse.",
        messages: user(),
      }),
    );
    expect(m.id).toMatch(/^msg_/);
    expect(m).toMatchObject({ type: "message", role: "assistant", model: MODEL, stop_reason: "max_tokens", stop_sequence: null });
    expect(m.content.length).toBeGreaterThan(0);
    for (const b of m.content) expect(b.type).toBe("text");
    expect(m.usage.output_tokens).toBe(8);

    // What Pensieve sent upstream: one streaming chat completion, system first, max_tokens kept.
    const calls = chatCalls(upstreamRec, before);
    expect(calls).toHaveLength(1);
    const sent = calls[0]!.body as Record<string, any>;
    expect(sent).toMatchObject({ stream: true, max_tokens: 8, temperature: 0, model: modelDir });
    expect(sent.messages.map((x: { role: string }) => x.role)).toEqual(["system", "user"]);
    expect(sent.messages[0].content).toBe("You are terse.");
    // Usage carried over: the prompt tokens the upstream counted are Anthropic's input + cache reads.
    const up = openAIUsage(await calls[0]!.response);
    expect(up).toBeDefined();
    expect(m.usage.output_tokens).toBe(up!.completion_tokens);
    expect(m.usage.input_tokens + (m.usage.cache_read_input_tokens ?? 0)).toBe(up!.prompt_tokens);
    expect(m.usage.cache_read_input_tokens ?? 0).toBe(up!.prompt_tokens_details?.cached_tokens ?? 0);
  });

  test("messages.create: a model that ends on its own gives stop_reason end_turn", async () => {
    // Sampled at temperature 1 the tiny model emits EOS after a few hundred tokens.
    const m = await client.messages.create(
      sampled<Anthropic.MessageCreateParamsNonStreaming>({ model: MODEL, max_tokens: 8000, temperature: 1, messages: user() }),
    );
    expect(m.stop_reason).toBe("end_turn");
    expect(m.usage.output_tokens).toBeGreaterThan(0);
    expect(m.usage.output_tokens).toBeLessThan(8000);
  });

  test("messages.stream: Anthropic's event order and a consistent finalMessage", async () => {
    const { events, final } = await sdkStream(client, { model: MODEL, max_tokens: 12, messages: user() });
    const s = checkAnthropicStream(events);
    expect(s.names.filter((n) => n !== "ping").join(" ")).toMatch(
      /^message_start (content_block_start( content_block_delta)+ content_block_stop )+message_delta message_stop$/,
    );
    expect(s.blocks[0]!.type).toBe("text");
    expect(s.message.model).toBe(MODEL);
    expect(final.model).toBe(MODEL);
    expect(final.stop_reason).toBe(s.stopReason as Anthropic.StopReason);
    expect(final.usage.output_tokens).toBe(s.usage.output_tokens);
    expect(textOf(final)).toBe(s.blocks.filter((b) => b.type === "text").map((b) => b.text).join(""));
  });

  test("messages.stream with a small max_tokens stops with stop_reason max_tokens", async () => {
    const { events, final } = await sdkStream(
      client,
      sampled<Anthropic.MessageStreamParams>({ model: MODEL, max_tokens: 3, temperature: 0, messages: user() }),
    );
    const s = checkAnthropicStream(events);
    expect(s.stopReason).toBe("max_tokens");
    expect(final.stop_reason).toBe("max_tokens");
    expect(final.usage.output_tokens).toBe(3);
    expect(final.usage.input_tokens + (final.usage.cache_read_input_tokens ?? 0)).toBeGreaterThan(0);
  });

  test("count_tokens: an estimate, labelled as one (mlx_lm.server has no tokenizer endpoint)", async () => {
    const { data, response } = await client.messages
      .countTokens({ model: MODEL, system: "You are terse.", messages: user("Count these words, please.") })
      .withResponse();
    expect(data.input_tokens).toBeGreaterThan(0);
    expect(response.headers.get("x-pensieve-token-count") ?? "").toMatch(/^estimate/);
    const h = await health(pensieve);
    expect(h.engine.upstream[0].tokenizer).toBe("estimate");
  });
});

describe("routing: haiku to a second upstream, the rest to mlx_lm.server", () => {
  let small: OpenAIStandin;
  let routed: RunningServer;
  let rclient: Anthropic;
  const ANSWER = "Routed to the small model.";

  beforeAll(async () => {
    small = startOpenAIStandin({ model: "small-model", maxModelLen: 8192, answer: ANSWER });
    // The README's form: the alias map names two targets, the routes send each to an upstream.
    routed = await startServer({
      args: [
        "--backend", "openai",
        "--upstream", `${upstreamRec.url}/v1`,
        "--aliases", "*haiku*=small,*=big",
        "--upstream-routes", `small=${small.url}/v1#small-model,big=${upstreamRec.url}/v1`,
      ],
    });
    rclient = sdk(routed);
  }, 180_000);

  afterAll(async () => {
    await routed?.stop();
    small?.stop();
  });

  test("a haiku model name is answered by the stand-in, with its own model id", async () => {
    const before = upstreamRec.exchanges.length;
    const m = await rclient.messages.create({ model: HAIKU, max_tokens: 20, messages: user() });
    expect(m).toMatchObject({ model: HAIKU, stop_reason: "end_turn" });
    expect(textOf(m)).toBe(ANSWER);
    expect(m.usage).toMatchObject({ input_tokens: 11, output_tokens: 3 });
    const calls = small.requests.filter((r) => r.path === "/v1/chat/completions");
    expect(calls).toHaveLength(1);
    expect(calls[0]!.body).toMatchObject({ model: "small-model", max_tokens: 20, stream: true });
    expect(chatCalls(upstreamRec, before)).toHaveLength(0);
  });

  test("any other model is answered by mlx_lm.server", async () => {
    const before = upstreamRec.exchanges.length;
    const smallBefore = small.requests.length;
    const { events, final } = await sdkStream(
      rclient,
      sampled<Anthropic.MessageStreamParams>({ model: MODEL, max_tokens: 4, temperature: 0, messages: user() }),
    );
    checkAnthropicStream(events);
    expect(final).toMatchObject({ model: MODEL, stop_reason: "max_tokens", usage: { output_tokens: 4 } });
    expect(textOf(final)).not.toBe(ANSWER);
    const calls = chatCalls(upstreamRec, before);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.body).toMatchObject({ model: modelDir, max_tokens: 4 });
    expect(small.requests.slice(smallBefore).filter((r) => r.path === "/v1/chat/completions")).toHaveLength(0);
  });

  test("/health has one entry per route, each with its upstream's state", async () => {
    const h = await health(routed);
    expect(h.status).toBe("ok");
    const routes = h.engine.routes as { pattern: string; state: string; model: string | null; detail: { upstream: { url: string; reachable: boolean }[] } }[];
    expect(routes.map((r) => r.pattern).sort()).toEqual(["*", "big", "small"]);
    const byPattern = Object.fromEntries(routes.map((r) => [r.pattern, r]));
    expect(byPattern.small).toMatchObject({ state: "ready", model: "small-model" });
    expect(byPattern.small!.detail.upstream[0]).toMatchObject({ url: small.url, reachable: true });
    expect(byPattern.big).toMatchObject({ state: "ready", model: modelDir });
    expect(byPattern.big!.detail.upstream[0]).toMatchObject({ url: upstreamRec.url, reachable: true });
  });
});

describe("upstream overloaded: a stand-in answering 429", () => {
  let busy: OpenAIStandin;
  let server: RunningServer;

  beforeAll(async () => {
    busy = startOpenAIStandin({
      model: "busy-model",
      maxModelLen: 8192,
      chat: () => Response.json({ error: { message: "Too many requests, slow down", type: "rate_limit_error" } }, { status: 429, headers: { "retry-after": "7" } }),
    });
    server = await startServer({ args: ["--backend", "openai", "--upstream", `${busy.url}/v1`] });
  }, 180_000);

  afterAll(async () => {
    await server?.stop();
    busy?.stop();
  });

  test("the SDK sees 529 overloaded_error with retry-after and x-should-retry: true", async () => {
    let caught: unknown;
    try {
      await sdk(server).messages.create({ model: MODEL, max_tokens: 8, messages: user() });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(APIError);
    const err = caught as APIError;
    expect(err.status).toBe(529);
    expect(err.type).toBe("overloaded_error");
    expect(err.headers?.get("retry-after")).toBe("7");
    expect(err.headers?.get("x-should-retry")).toBe("true");
    expect(err.apiMessage ?? "").toContain(busy.url);
  });

  test("a streaming request gets the same 529 before any event", async () => {
    const res = await post(server, { model: MODEL, max_tokens: 8, stream: true, messages: user() });
    expect(res.status).toBe(529);
    expect(res.headers.get("retry-after")).toBe("7");
    expect(res.headers.get("x-should-retry")).toBe("true");
    const body = (await res.json()) as { type: string; error: { type: string; message: string } };
    expect(body).toMatchObject({ type: "error", error: { type: "overloaded_error" } });
    // Overloaded is not down: the upstream stays reachable and Pensieve stays ready.
    const h = await health(server);
    expect(h).toMatchObject({ status: "ok", ready: true });
    expect(h.engine.upstream[0]).toMatchObject({ url: busy.url, reachable: true });
  });
});

describe("max_tokens larger than the room the upstream's context leaves", () => {
  let tight: OpenAIStandin;
  let server: RunningServer;

  beforeAll(async () => {
    // vLLM's wording; Pensieve reads the numbers, clamps max_tokens to the room and retries once.
    tight = startOpenAIStandin({
      model: "tight-model",
      maxModelLen: 4096,
      answer: "clamped and answered",
      chat: (body, n) => {
        if (body.max_tokens > 4096 - 1000) {
          const message =
            `This model's maximum context length is 4096 tokens. However, you requested ${1000 + body.max_tokens} tokens ` +
            `(1000 in the messages, ${body.max_tokens} in the completion). Please reduce the length of the messages or completion.`;
          return Response.json({ object: "error", message, type: "BadRequestError", code: 400 }, { status: 400 });
        }
        return Response.json({
          id: `chatcmpl-${n}`,
          object: "chat.completion",
          model: "tight-model",
          choices: [{ index: 0, message: { role: "assistant", content: "clamped and answered" }, finish_reason: "stop" }],
          usage: { prompt_tokens: 1000, completion_tokens: 4, total_tokens: 1004 },
        });
      },
    });
    server = await startServer({ args: ["--backend", "openai", "--upstream", `${tight.url}/v1`] });
  }, 180_000);

  afterAll(async () => {
    await server?.stop();
    tight?.stop();
  });

  test("Claude Code's max_tokens 128000 is clamped to fit and the request succeeds", async () => {
    // Streamed, as Claude Code asks (the SDK refuses a non-streaming call this large).
    const { events, final } = await sdkStream(sdk(server), { model: MODEL, max_tokens: 128000, messages: user() });
    checkAnthropicStream(events);
    expect(final).toMatchObject({ stop_reason: "end_turn", usage: { output_tokens: 4 } });
    expect(textOf(final)).toBe("clamped and answered");
    const sent = tight.requests.filter((r) => r.path === "/v1/chat/completions").map((r) => r.body.max_tokens as number);
    expect(sent).toHaveLength(2);
    expect(sent[0]).toBeLessThanOrEqual(4096);
    expect(sent[1]).toBe(4096 - 1000);
  });
});

// Last: this stops mlx_lm.server for good.
describe("upstream down: mlx_lm.server stopped", () => {
  let direct: RunningServer;

  beforeAll(async () => {
    // Straight at mlx_lm.server (no recorder in between), as a user would run it.
    direct = await startServer({ args: ["--backend", "openai", "--upstream", `${mlx.url}/v1`] });
  }, 180_000);

  afterAll(async () => {
    await direct?.stop();
  });

  test("before: it answers and /health shows the upstream reachable", async () => {
    const m = await sdk(direct).messages.create({ model: MODEL, max_tokens: 2, messages: user() });
    expect(m.stop_reason).toBe("max_tokens");
    expect((await health(direct)).engine.upstream[0]).toMatchObject({ url: mlx.url, reachable: true });
  });

  test("after stopping it by pid: 503 naming the upstream, and /health shows it unreachable", async () => {
    await mlx.stop();
    expect(mlx.proc.exitCode !== null || mlx.proc.signalCode !== null).toBe(true);

    let caught: unknown;
    try {
      await sdk(direct).messages.create({ model: MODEL, max_tokens: 8, messages: user() });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(APIError);
    const err = caught as APIError;
    expect(err.status).toBe(503);
    expect(err.apiMessage ?? "").toContain(mlx.url);
    expect(err.apiMessage ?? "").toContain("cannot reach upstream");

    // Streaming: the same 503 as an HTTP status, before any SSE event.
    const res = await post(direct, { model: MODEL, max_tokens: 8, stream: true, messages: user() });
    expect(res.status).toBe(503);
    const body = (await res.json()) as { type: string; error: { type: string; message: string } };
    expect(body.type).toBe("error");
    expect(body.error.message).toContain(mlx.url);

    const h = await health(direct);
    expect(h.ready).toBe(false);
    expect(h.status).toBe("failed");
    expect(h.engine.upstream[0]).toMatchObject({ url: mlx.url, reachable: false });
    expect(h.engine.upstream[0].lastError).toContain("cannot reach upstream");
  });
});
