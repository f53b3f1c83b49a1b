/** OpenAIUpstreamEngine against a fake fetch: request shape, failures, health, token counts. */
import { describe, expect, jest, test } from "bun:test";
import { EngineBadRequestError, EngineOverloadedError, PromptTooLongError } from "../../../src/engine/errors";
import type { GenerateRequest } from "../../../src/engine/types";
import { UpstreamUnavailableError } from "../../../src/upstream/errors";
import { OpenAIUpstreamEngine, type OpenAIUpstreamOptions } from "../../../src/upstream/openai-engine";
import { type Handler, collect, connectionRefused, fakeUpstream, fixture, json, split, streamResponse } from "./fake-upstream";
import { serveDefaults } from "../../../src/config";
import { upstreamTuning } from "../../../src/upstream/index";

const req = (over: Partial<GenerateRequest> = {}): GenerateRequest => ({
  requestId: "req_42",
  messages: [{ role: "user", content: "hi" }],
  maxTokens: 64,
  ...over,
});

const TUNING = upstreamTuning(serveDefaults());
const silent = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
const models = (data: unknown[]) => json({ object: "list", data });

// Lets a probe started by a fired timer finish against the fake fetch (a chain of resolved promises).
async function settle(): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve();
}

function engineWith(handler: Handler, opts: Partial<OpenAIUpstreamOptions> = {}) {
  const up = fakeUpstream(handler);
  const engine = new OpenAIUpstreamEngine({
    ...TUNING,
    baseUrl: "http://gpu:8000/v1/",
    fetch: up.fetch,
    logger: silent,
    reprobeIntervalMs: 0,
    ...opts,
  });
  return { engine, up };
}

const textStream: Handler = (r, signal) =>
  r.path === "/v1/models"
    ? models([{ id: "Qwen/Qwen3-8B", object: "model", owned_by: "vllm", max_model_len: 40960 }])
    : streamResponse(split(fixture("vllm-text.sse"), [64]), signal);

describe("start, model, state, health", () => {
  test("discovers the model id and context window from /v1/models (vLLM)", async () => {
    const { engine, up } = engineWith(textStream, { apiKey: "sk-up" });
    expect(engine.state()).toBe("stopped");
    const info = await engine.start();
    expect(info).toEqual({
      id: "Qwen/Qwen3-8B",
      path: "http://gpu:8000",
      contextLength: 40960,
      isDemo: false,
      supportsVision: false,
      kvBytesPerToken: 0,
    });
    expect(engine.state()).toBe("ready");
    expect(up.requests[0]?.url).toBe("http://gpu:8000/v1/models");
    expect(up.requests[0]?.headers.get("authorization")).toBe("Bearer sk-up");
    const stats = await engine.stats();
    expect(stats.upstream[0]).toMatchObject({ url: "http://gpu:8000", reachable: true, model: "Qwen/Qwen3-8B", lastError: null });
    await engine.stop();
    expect(engine.state()).toBe("stopped");
  });

  test("llama-server: context window from /props, not n_ctx_train", async () => {
    const { engine } = engineWith((r) =>
      r.path === "/props"
        ? json({ default_generation_settings: { n_ctx: 8192 } })
        : models([{ id: "qwen.gguf", owned_by: "llamacpp", meta: { n_ctx_train: 131072 } }]),
    );
    expect((await engine.start()).contextLength).toBe(8192);
  });

  test("several models: the configured one wins; otherwise none is guessed (no model field sent)", async () => {
    const list = models([{ id: "a", max_model_len: 1000 }, { id: "b", max_model_len: 2000 }]);
    const warnings: string[] = [];
    const a = engineWith(() => list.clone(), { model: "b" });
    expect(await a.engine.start()).toMatchObject({ id: "b", contextLength: 2000 });
    const b = engineWith((r, signal) => (r.path === "/v1/models" ? list.clone() : streamResponse([fixture("vllm-text.sse")], signal)), {
      logger: { ...silent, warn: (m) => warnings.push(m) },
    });
    expect((await b.engine.start()).id).toBe("upstream-gpu:8000");
    expect(warnings.join("\n")).toContain("--upstream URL#MODEL");
    await collect(b.engine.generate(req()));
    expect(b.up.requests.find((r) => r.path === "/v1/chat/completions")?.body).not.toHaveProperty("model");
  });

  test("mlx_lm.server's empty /v1/models answer: a synthetic id, the default context, and no model field sent", async () => {
    const { engine, up } = engineWith(
      (r, signal) => (r.path === "/v1/models" ? new Response("", { status: 200 }) : streamResponse([fixture("mlx-text-length.sse")], signal)),
      { defaultContextLength: 4096 },
    );
    expect(await engine.start()).toMatchObject({ id: "upstream-gpu:8000", contextLength: 4096 });
    await collect(engine.generate(req()));
    const chat = up.requests.find((r) => r.path === "/v1/chat/completions");
    expect(chat?.body).not.toHaveProperty("model");
    // The empty answer counts as discovered: no re-probe before every request.
    expect(up.requests.filter((r) => r.path === "/v1/models")).toHaveLength(1);
  });

  test("an unreachable upstream does not fail start(): state failed, health says why, recovery is automatic", async () => {
    let down = true;
    const { engine } = engineWith((r, signal) => {
      if (down) throw connectionRefused();
      return textStream(r, signal);
    });
    const info = await engine.start();
    expect(info.id).toBe("upstream-gpu:8000");
    expect(engine.state()).toBe("failed");
    const h = (await engine.stats()).upstream[0];
    expect(h).toMatchObject({ reachable: false });
    expect(h?.lastError).toContain("ECONNREFUSED");

    const { error } = await collect(engine.generate(req()));
    expect(error).toBeInstanceOf(UpstreamUnavailableError);
    expect((error as UpstreamUnavailableError).failure).toBe("unreachable");
    expect((error as Error).message).toContain("cannot reach upstream http://gpu:8000");

    down = false;
    const { events } = await collect(engine.generate(req()));
    expect(events.at(-1)).toMatchObject({ type: "done", finishReason: "stop" });
    expect(engine.state()).toBe("ready");
    expect(engine.model()?.id).toBe("Qwen/Qwen3-8B");
  });

  test("the background re-probe notices the upstream coming back", async () => {
    let down = true;
    const { engine } = engineWith(
      (r, signal) => {
        if (down) throw connectionRefused();
        return textStream(r, signal);
      },
      { reprobeIntervalMs: 10_000 },
    );
    // Fake timers fire the re-probe interval: no wall-clock polling.
    jest.useFakeTimers();
    try {
      await engine.start();
      expect(engine.state()).toBe("failed");
      down = false;
      jest.advanceTimersByTime(9_999);
      await settle();
      expect(engine.state()).toBe("failed");
      jest.advanceTimersByTime(1);
      await settle();
      expect(engine.state()).toBe("ready");
      await engine.stop();
    } finally {
      jest.useRealTimers();
    }
  });
});

describe("generate: the request", () => {
  test("POSTs a streaming chat completion to {root}/v1/chat/completions with auth and request id", async () => {
    const { engine, up } = engineWith(textStream, { apiKey: "sk-up", model: "served", extraBody: { min_p: 0.05 } });
    await collect(engine.generate(req({ temperature: 0.5, stop: ["###"] })));
    const chat = up.requests.find((r) => r.path === "/v1/chat/completions");
    expect(chat?.url).toBe("http://gpu:8000/v1/chat/completions");
    expect(chat?.method).toBe("POST");
    expect(chat?.headers.get("authorization")).toBe("Bearer sk-up");
    expect(chat?.headers.get("x-request-id")).toBe("req_42");
    expect(chat?.body).toMatchObject({
      model: "served",
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 64,
      temperature: 0.5,
      stop: ["###"],
      min_p: 0.05,
      messages: [{ role: "user", content: "hi" }],
    });
  });

  test("a server that ignores stream:true and answers one JSON completion still works", async () => {
    const { engine } = engineWith((r) =>
      r.path === "/v1/models"
        ? models([{ id: "m" }])
        : json({
            id: "chatcmpl-1",
            object: "chat.completion",
            choices: [
              {
                index: 0,
                message: {
                  role: "assistant",
                  content: "Checking.",
                  tool_calls: [{ id: "call_9", type: "function", function: { name: "ls", arguments: '{"path":"/"}' } }],
                },
                finish_reason: "tool_calls",
              },
            ],
            usage: { prompt_tokens: 12, completion_tokens: 7, total_tokens: 19 },
          }),
    );
    const { events, error } = await collect(engine.generate(req()));
    expect(error).toBeUndefined();
    expect(events).toEqual([
      { type: "started", promptTokens: 0, cachedTokens: 0 },
      { type: "text", text: "Checking." },
      { type: "tool_call", name: "ls", arguments: { path: "/" } },
      { type: "done", finishReason: "tool_calls", promptTokens: 12, completionTokens: 7, cachedTokens: 0 },
    ]);
  });
});

describe("generate: failures", () => {
  test("429 with retry-after -> EngineOverloadedError before any event", async () => {
    const { engine } = engineWith((r) =>
      r.path === "/v1/models" ? models([{ id: "m" }]) : json({ error: { message: "rate limited" } }, 429, { "retry-after": "9" }),
    );
    const { events, error } = await collect(engine.generate(req()));
    expect(events).toEqual([]);
    expect(error).toBeInstanceOf(EngineOverloadedError);
    expect((error as EngineOverloadedError).retryAfterSeconds).toBe(9);
    expect((await engine.stats()).upstream[0]?.lastError).toContain("overloaded");
  });

  test("503 without retry-after -> overloaded, default retry", async () => {
    const { engine } = engineWith((r) => (r.path === "/v1/models" ? models([{ id: "m" }]) : new Response("busy", { status: 503 })));
    const { error } = await collect(engine.generate(req()));
    expect((error as EngineOverloadedError).retryAfterSeconds).toBe(5);
  });

  test("max_tokens too large for the context is clamped and retried once", async () => {
    const { engine, up } = engineWith((r, signal) => {
      if (r.path === "/v1/models") return models([{ id: "m", max_model_len: 4096 }]);
      if (r.body.max_tokens > 1096) {
        return json(
          {
            object: "error",
            message:
              "'max_tokens' or 'max_completion_tokens' is too large: 32000. This model's maximum context length is 4096 tokens and your request has 3000 input tokens (32000 > 4096 - 3000).",
            code: 400,
          },
          400,
        );
      }
      return streamResponse([fixture("vllm-text.sse")], signal);
    });
    const { events, error } = await collect(engine.generate(req({ maxTokens: 32000 })));
    expect(error).toBeUndefined();
    expect(events.at(-1)).toMatchObject({ type: "done" });
    expect(up.requests.filter((r) => r.path === "/v1/chat/completions").map((r) => r.body.max_tokens)).toEqual([32000, 1096]);
  });

  test("a prompt longer than the context -> PromptTooLongError; other 400s -> bad request; neither taints health", async () => {
    let body: unknown = {
      object: "error",
      message: "This model's maximum context length is 4096 tokens. However, your request has 5000 input tokens. Please reduce the length of the input messages.",
      code: 400,
    };
    const { engine } = engineWith((r) => (r.path === "/v1/models" ? models([{ id: "m" }]) : json(body, 400)));
    const first = await collect(engine.generate(req()));
    expect(first.error).toBeInstanceOf(PromptTooLongError);
    expect([(first.error as PromptTooLongError).promptTokens, (first.error as PromptTooLongError).maxTokens]).toEqual([5000, 4096]);
    body = { error: "tools[0] is missing a name" };
    const second = await collect(engine.generate(req()));
    expect(second.error).toBeInstanceOf(EngineBadRequestError);
    expect((second.error as Error).message).toContain("tools[0] is missing a name");
    expect((await engine.stats()).upstream[0]).toMatchObject({ reachable: true, lastError: null });
  });

  test("no response headers in time -> UpstreamUnavailableError (timeout)", async () => {
    const { engine } = engineWith((r) => (r.path === "/v1/models" ? models([{ id: "m" }]) : new Promise<Response>(() => {})), {
      timeouts: { ...TUNING.timeouts, headersMs: 20 },
    });
    await engine.start();
    const { error } = await collect(engine.generate(req()));
    expect(error).toBeInstanceOf(UpstreamUnavailableError);
    expect((error as UpstreamUnavailableError).failure).toBe("timeout");
    expect(engine.state()).toBe("failed");
  });

  test("a stream that stalls mid-way -> UpstreamUnavailableError after the events so far", async () => {
    const head = 'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n';
    const { engine } = engineWith(
      (r, signal) => (r.path === "/v1/models" ? models([{ id: "m" }]) : streamResponse([head], signal, { hang: true })),
      { timeouts: { ...TUNING.timeouts, idleMs: 20 } },
    );
    const { events, error } = await collect(engine.generate(req()));
    expect(events.map((e) => e.type)).toEqual(["started", "text"]);
    expect(error).toBeInstanceOf(UpstreamUnavailableError);
    expect((error as Error).message).toContain("sent nothing for 20 ms");
  });

  test("a stream cut before finish_reason and [DONE] -> stream_broken", async () => {
    const bytes = fixture("vllm-text.sse");
    const { engine } = engineWith((r, signal) =>
      r.path === "/v1/models" ? models([{ id: "m" }]) : streamResponse([bytes.subarray(0, 400)], signal),
    );
    const { error } = await collect(engine.generate(req()));
    expect((error as UpstreamUnavailableError).failure).toBe("stream_broken");
  });

  test("aborting mid-stream cancels the upstream request and ends with done(cancelled)", async () => {
    const head = 'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n';
    let upstreamSignal: AbortSignal | undefined;
    const { engine } = engineWith((r, signal) => {
      if (r.path === "/v1/models") return models([{ id: "m" }]);
      upstreamSignal = signal;
      return streamResponse([head], signal, { hang: true });
    });
    const ctl = new AbortController();
    const seen: string[] = [];
    for await (const ev of engine.generate(req(), ctl.signal)) {
      seen.push(ev.type === "done" ? `done:${ev.finishReason}` : ev.type);
      if (ev.type === "text") ctl.abort();
    }
    expect(seen).toEqual(["started", "text", "done:cancelled"]);
    expect(upstreamSignal?.aborted).toBe(true);
    expect((await engine.stats()).running).toBe(0);
  });

  test("a consumer that stops reading releases the upstream connection", async () => {
    let upstreamSignal: AbortSignal | undefined;
    const { engine } = engineWith((r, signal) => {
      if (r.path === "/v1/models") return models([{ id: "m" }]);
      upstreamSignal = signal;
      return streamResponse(split(fixture("vllm-text.sse"), [40]), signal, { hang: true });
    });
    for await (const ev of engine.generate(req())) if (ev.type === "text") break;
    expect(upstreamSignal?.aborted).toBe(true);
    expect((await engine.stats()).running).toBe(0);
  });

  test("aborted before the upstream answered: no events, no error", async () => {
    const ctl = new AbortController();
    const { engine } = engineWith((r) => {
      if (r.path === "/v1/models") return models([{ id: "m" }]);
      ctl.abort();
      return new Promise<Response>(() => {});
    });
    expect(await collect(engine.generate(req(), ctl.signal))).toEqual({ events: [] });
  });
});

describe("countTokens", () => {
  const input = { messages: [{ role: "user" as const, content: "x".repeat(400) }] };

  test("vLLM /tokenize with messages -> exact, and the method is remembered", async () => {
    const { engine, up } = engineWith((r) =>
      r.path === "/tokenize" ? json({ count: 123, max_model_len: 4096, tokens: [] }) : models([{ id: "m" }]),
    );
    expect(await engine.countTokensDetailed(input)).toEqual({ count: 123, exact: true, source: "vllm" });
    expect(await engine.countTokens(input)).toBe(123);
    const tok = up.requests.filter((r) => r.path === "/tokenize");
    expect(tok[0]?.body).toMatchObject({ model: "m", add_generation_prompt: true, messages: [{ role: "user" }] });
    expect(up.requests.some((r) => r.path === "/apply-template")).toBe(false);
    expect((await engine.stats()).upstream[0]?.tokenizer).toBe("vllm");
  });

  test("llama-server: /apply-template then /tokenize of the rendered prompt", async () => {
    const { engine, up } = engineWith((r) => {
      if (r.path === "/apply-template") return json({ prompt: "<|im_start|>user\nxx<|im_end|>\n<|im_start|>assistant\n" });
      if (r.path === "/tokenize") return json({ tokens: r.body.content ? [1, 2, 3, 4, 5, 6, 7] : [] });
      return models([{ id: "m" }]);
    });
    expect(await engine.countTokensDetailed(input)).toEqual({ count: 7, exact: true, source: "llama-server" });
    expect(await engine.countTokensDetailed(input)).toEqual({ count: 7, exact: true, source: "llama-server" });
    // Probed vLLM-style once, then straight to the llama-server method.
    expect(up.requests.filter((r) => r.path === "/tokenize").map((r) => "content" in r.body)).toEqual([false, true, true]);
  });

  test("no tokenizer endpoint (mlx_lm.server, Ollama) -> a labelled estimate, without probing again", async () => {
    const { engine, up } = engineWith((r) => (r.path === "/v1/models" ? models([{ id: "m" }]) : new Response("Not Found", { status: 404 })));
    const r = await engine.countTokensDetailed(input);
    expect(r).toMatchObject({ exact: false, source: "estimate" });
    expect(r.count).toBeGreaterThanOrEqual(100);
    const before = up.requests.length;
    await engine.countTokensDetailed(input);
    expect(up.requests.length).toBe(before);
  });

  test("upstream down -> estimate now, the real method once it is back", async () => {
    let down = true;
    const { engine } = engineWith((r) => {
      if (down) throw connectionRefused();
      return r.path === "/tokenize" ? json({ count: 9 }) : models([{ id: "m" }]);
    });
    expect((await engine.countTokensDetailed(input)).source).toBe("estimate");
    down = false;
    expect(await engine.countTokensDetailed(input)).toEqual({ count: 9, exact: true, source: "vllm" });
  });
});
