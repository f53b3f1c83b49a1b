/**
 * The real server from source (src/main.ts serve) on an ephemeral port, with the real worker
 * and the tiny random-weight model, driven by the official @anthropic-ai/sdk and by raw fetch.
 * Asserts structure and event order, never the model's text.
 */
import Anthropic, { AuthenticationError, BadRequestError } from "@anthropic-ai/sdk";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import pkg from "../../package.json" with { type: "json" };
import { checkAnthropicStream, parseSse, type WireEvent } from "../support/sse";
import { DEFAULT_TOKEN, type RunningServer, startServer, testPython, tinyModelDir } from "../support/server-process";
import { sampled } from "../support/sampled";

// Real processes on a 2-core machine; bunfig's timeout may not apply to every runner.
setDefaultTimeout(180_000);

let server: RunningServer;
let client: Anthropic;
// The model Claude Code 2.1.328 asks for (and not on the SDK's deprecation list, which warns).
const MODEL = "claude-opus-5-5";
// Every request gets its own text so nothing depends on what an earlier one left cached.
const nonce = () => Math.random().toString(36).slice(2, 10);
const user = (text = `Say something. ${nonce()}`) => [{ role: "user" as const, content: text }];

beforeAll(async () => {
  server = await startServer({ args: ["--python", testPython(), "--model", await tinyModelDir()] });
  client = new Anthropic({ baseURL: server.url, apiKey: DEFAULT_TOKEN, maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  await server?.stop();
});

async function health(): Promise<Record<string, any>> {
  const res = await fetch(`${server.url}/health`, { headers: { "x-api-key": DEFAULT_TOKEN } });
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, any>;
}

/** POST /v1/messages with stream: true by fetch; the body parsed strictly. */
async function rawStream(body: Record<string, unknown>): Promise<{ res: Response; events: WireEvent[] }> {
  const res = await fetch(`${server.url}/v1/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": DEFAULT_TOKEN, "anthropic-version": "2023-06-01" },
    body: JSON.stringify({ ...body, stream: true }),
  });
  return { res, events: res.status === 200 ? parseSse(await res.text()) : [] };
}

/** SDK stream events as wire events, so the same grammar checker applies. */
async function sdkStreamEvents(params: Anthropic.MessageStreamParams) {
  const stream = client.messages.stream(params);
  const events: WireEvent[] = [];
  // Cloned as received: the SDK mutates message_start's message into its running snapshot.
  for await (const ev of stream) events.push({ event: ev.type, data: structuredClone(ev) as unknown as WireEvent["data"], raw: "" });
  return { events, final: await stream.finalMessage() };
}

function expectMessageShape(m: Anthropic.Message, model: string) {
  expect(m.id).toMatch(/^msg_/);
  expect(m.type).toBe("message");
  expect(m.role).toBe("assistant");
  expect(m.model).toBe(model);
  expect(Array.isArray(m.content)).toBe(true);
  for (const block of m.content) expect(["text", "tool_use", "thinking"]).toContain(block.type);
  expect(["end_turn", "max_tokens", "stop_sequence", "tool_use"]).toContain(m.stop_reason!);
  expect(Number.isInteger(m.usage.input_tokens) && promptTotal(m.usage) > 0).toBe(true);
  expect(Number.isInteger(m.usage.output_tokens) && m.usage.output_tokens >= 0).toBe(true);
}

/** Anthropic: input_tokens + cache reads + cache writes = the prompt's tokens. */
function promptTotal(u: { input_tokens: number; cache_read_input_tokens?: number | null; cache_creation_input_tokens?: number | null }) {
  return u.input_tokens + (u.cache_read_input_tokens ?? 0) + (u.cache_creation_input_tokens ?? 0);
}

const textOf = (m: Anthropic.Message) => m.content.map((b) => (b.type === "text" ? b.text : "")).join("");

describe("service endpoints", () => {
  test("/health reports ok, the model, the version and uptime", async () => {
    const h = await health();
    expect(h).toMatchObject({ status: "ok", ready: true, version: pkg.version, engine: { state: "ready" } });
    expect(typeof h.model).toBe("string");
    expect(h.model.length).toBeGreaterThan(0);
    expect(typeof h.uptime_s).toBe("number");
  });

  test("GET and HEAD /api/hello answer 200 without a token", async () => {
    const get = await fetch(`${server.url}/api/hello`);
    expect(get.status).toBe(200);
    await get.text();
    const head = await fetch(`${server.url}/api/hello`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
  });

  test("models.list lists a claude id and models.retrieve echoes it", async () => {
    const ids: string[] = [];
    for await (const m of client.models.list()) {
      expect(m.type).toBe("model");
      ids.push(m.id);
    }
    const claude = ids.find((id) => id.includes("claude"));
    expect(claude).toBeDefined();
    const one = await client.models.retrieve(claude!);
    expect(one).toMatchObject({ type: "model", id: claude });
    expect(typeof one.display_name).toBe("string");
  });

  test("a wrong key is an AuthenticationError with Anthropic's error body", async () => {
    const bad = new Anthropic({ baseURL: server.url, apiKey: "not-the-token", maxRetries: 0 });
    const err = await bad.messages.create({ model: MODEL, max_tokens: 4, messages: user() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthenticationError);
    const e = err as AuthenticationError;
    expect(e.status).toBe(401);
    expect(e.error).toMatchObject({ type: "error", error: { type: "authentication_error" } });
    expect(e.requestID).toMatch(/^req_/);
  });

  test("a Bearer token (authToken) is accepted", async () => {
    const bearer = new Anthropic({ baseURL: server.url, authToken: DEFAULT_TOKEN, maxRetries: 0 });
    const n = await bearer.messages.countTokens({ model: MODEL, messages: user() });
    expect(n.input_tokens).toBeGreaterThan(0);
  });
});

describe("messages.create", () => {
  test("a Message with the requested model name, a stop reason and usage", async () => {
    const m = await client.messages.create({ model: MODEL, max_tokens: 24, messages: user() });
    expectMessageShape(m, MODEL);
    expect(["end_turn", "max_tokens"]).toContain(m.stop_reason!);
    expect(m.stop_sequence).toBeNull();
    expect(m.usage.output_tokens).toBeLessThanOrEqual(24);
  });

  test("a small max_tokens stops with max_tokens after exactly that many tokens", async () => {
    // Greedy decoding of the tiny model repeats itself and never reaches its end token.
    const m = await client.messages.create(sampled<Anthropic.MessageCreateParamsNonStreaming>({ model: MODEL, max_tokens: 3, temperature: 0, messages: user() }));
    expectMessageShape(m, MODEL);
    expect(m.stop_reason).toBe("max_tokens");
    expect(m.usage.output_tokens).toBe(3);
  });

  test("temperature, top_p and top_k are accepted", async () => {
    const m = await client.messages.create(
      sampled<Anthropic.MessageCreateParamsNonStreaming>({ model: MODEL, max_tokens: 8, temperature: 0.7, top_p: 0.9, top_k: 20, messages: user() }),
    );
    expectMessageShape(m, MODEL);
  });

  test("an out-of-range temperature is a 400 invalid_request_error", async () => {
    const err = await client.messages
      .create(sampled<Anthropic.MessageCreateParamsNonStreaming>({ model: MODEL, max_tokens: 8, temperature: 7, messages: user() })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadRequestError);
    expect((err as BadRequestError).error).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
  });

  test("system as blocks and role:system entries in messages are served", async () => {
    const m = await client.messages.create({
      model: MODEL,
      max_tokens: 4,
      system: [{ type: "text", text: "Be brief.", cache_control: { type: "ephemeral" } }],
      messages: [
        ...user(),
        { role: "assistant", content: "ok" },
        { role: "system", content: "Mid-conversation note." } as unknown as Anthropic.MessageParam,
        { role: "user", content: [{ type: "text", text: `Again. ${nonce()}` }] },
      ],
    });
    expectMessageShape(m, MODEL);
  });
});

describe("messages.stream", () => {
  test("the SDK sees Anthropic's event order and a consistent finalMessage", async () => {
    const { events, final } = await sdkStreamEvents({ model: MODEL, max_tokens: 12, messages: user() });
    const s = checkAnthropicStream(events);
    expect(s.names[0]).toBe("message_start");
    expect(s.names.at(-1)).toBe("message_stop");
    // Pings may come anywhere (the server pings while the worker is silent); the rest is fixed.
    expect(s.names.filter((n) => n !== "ping").join(" ")).toMatch(
      /^message_start (content_block_start( content_block_delta)+ content_block_stop )+message_delta message_stop$/,
    );
    expect(s.blocks[0]!.type).toBe("text");

    expectMessageShape(final, MODEL);
    expect(final.stop_reason).toBe(s.stopReason as Anthropic.StopReason);
    expect(final.usage.output_tokens).toBe(s.usage.output_tokens);
    expect(promptTotal(final.usage)).toBe(promptTotal(s.message.usage as Anthropic.Usage));
    expect(final.content.length).toBe(s.blocks.length);
    expect(textOf(final)).toBe(s.blocks.filter((b) => b.type === "text").map((b) => b.text).join(""));
  });

  test("raw SSE: strict wire format, content type, request id, cumulative usage", async () => {
    const { res, events } = await rawStream({ model: MODEL, max_tokens: 5, temperature: 0, messages: user() });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(res.headers.get("request-id")).toMatch(/^req_/);
    const s = checkAnthropicStream(events);
    expect(s.message.model).toBe(MODEL);
    expect(s.stopReason).toBe("max_tokens");
    expect(s.usage.output_tokens).toBe(5);
    expect(promptTotal(s.usage as Anthropic.Usage)).toBe(promptTotal(s.message.usage as Anthropic.Usage));
    expect(s.textDeltas).toBeGreaterThan(0);
  });

  test("a small max_tokens ends the stream with stop_reason max_tokens", async () => {
    const { events, final } = await sdkStreamEvents(sampled<Anthropic.MessageStreamParams>({ model: MODEL, max_tokens: 2, temperature: 0, messages: user() }));
    const s = checkAnthropicStream(events);
    expect(s.stopReason).toBe("max_tokens");
    expect(final.stop_reason).toBe("max_tokens");
    expect(final.usage.output_tokens).toBe(2);
  });

  test("count_tokens equals message_start's input tokens for the same request", async () => {
    const params = {
      model: MODEL,
      system: "You are a test.",
      messages: [...user(), { role: "assistant" as const, content: "Sure." }, ...user()],
    };
    const counted = await client.messages.countTokens(params);
    const { events } = await sdkStreamEvents({ ...params, max_tokens: 1 });
    const start = checkAnthropicStream(events).message.usage;
    // count_tokens counts the whole prompt; a stream splits it into uncached + cache reads.
    expect(counted.input_tokens).toBe(start.input_tokens + (start.cache_read_input_tokens ?? 0));
  });
});

describe("stop sequences", () => {
  test("a stop sequence taken from a greedy run stops the same run, echoed and excluded", async () => {
    const params = sampled<Anthropic.MessageCreateParamsNonStreaming>({ model: MODEL, max_tokens: 16, temperature: 0, messages: user("Stop test.") });
    const first = await client.messages.create(params);
    expect(first.stop_reason).toBe("max_tokens");
    const text = textOf(first);
    // A substring spanning several tokens (each greedy token is short), from past the start.
    const start = Math.min(2, text.length - 3);
    const stop = text.slice(start, start + 3);
    expect(stop.length).toBe(3);

    const second = await client.messages.create({ ...params, stop_sequences: ["never-in-output-\u0001", stop] });
    expectMessageShape(second, MODEL);
    expect(second.stop_reason).toBe("stop_sequence");
    expect(second.stop_sequence).toBe(stop);
    expect(textOf(second)).toBe(text.slice(0, text.indexOf(stop)));

    const { events } = await sdkStreamEvents({ ...params, stop_sequences: [stop] });
    const s = checkAnthropicStream(events);
    expect(s.stopReason).toBe("stop_sequence");
    expect(s.stopSequence).toBe(stop);
  });

  test("sampled output: whatever stops it, no stop sequence appears in the text", async () => {
    const stops = ["e", "a", "o", " ", "t"];
    for (let i = 0; i < 3; i++) {
      const m = await client.messages.create(
        sampled<Anthropic.MessageCreateParamsNonStreaming>({ model: MODEL, max_tokens: 64, temperature: 1, messages: user(), stop_sequences: stops }),
      );
      expectMessageShape(m, MODEL);
      const text = textOf(m);
      for (const s of stops) expect(text.includes(s)).toBe(false);
      if (m.stop_reason === "stop_sequence") expect(stops).toContain(m.stop_sequence!);
      else expect(m.stop_sequence).toBeNull();
    }
  });
});

describe("prompt too long", () => {
  // ~2 tokens per word with the tiny tokenizer: far over its 65536-token context.
  const long = () => [{ role: "user" as const, content: Array.from({ length: 40_000 }, (_, i) => `w${i % 97}x${i % 13}`).join(" ") }];
  const TOO_LONG = /^prompt is too long: (\d+) tokens > (\d+) maximum$/;

  test("messages.create gets a 400 invalid_request_error worded as Anthropic words it", async () => {
    const messages = long();
    const err = await client.messages.create({ model: MODEL, max_tokens: 16, messages }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadRequestError);
    const e = err as BadRequestError;
    expect(e.status).toBe(400);
    expect(e.error).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
    const msg = (e.error as { error: { message: string } }).error.message;
    const [, n, max] = TOO_LONG.exec(msg) ?? [];
    expect(msg).toMatch(TOO_LONG);
    const counted = await client.messages.countTokens({ model: MODEL, messages });
    expect(Number(n)).toBe(counted.input_tokens);
    const h = await health();
    expect(Number(max)).toBe(h.engine.model?.contextLength ?? 65536);
    expect(Number(n)).toBeGreaterThan(Number(max));
  });

  test("a stream is refused with the same JSON 400 before any event", async () => {
    const messages = long();
    const { res } = await rawStream({ model: MODEL, max_tokens: 16, messages });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const body = (await res.json()) as { type: string; error: { type: string; message: string }; request_id: string };
    expect(body).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
    expect(body.error.message).toMatch(TOO_LONG);
    expect(body.request_id).toMatch(/^req_/);

    const stream = client.messages.stream({ model: MODEL, max_tokens: 16, messages });
    const err = await stream.finalMessage().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadRequestError);
  });
});
