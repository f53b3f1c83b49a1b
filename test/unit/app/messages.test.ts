import { describe, expect, test } from "bun:test";
import { MessageAccumulator } from "../../../src/anthropic/aggregate";
import { EngineBadRequestError, EngineOverloadedError, PromptTooLongError, WorkerCrashedError } from "../../../src/engine/errors";
import { textScript } from "../../support/fake-engine";
import { BASE, chunkText, loadFixture, makeApp, parseSse, postMessages, readSse, request, simpleBody } from "./harness";

const order = (evs: { event: string }[]) => evs.map((e) => e.event);
const TEXT_ORDER = [
  "message_start",
  "ping",
  "content_block_start",
  "content_block_delta",
  "content_block_delta",
  "content_block_delta",
  "content_block_stop",
  "message_delta",
  "message_stop",
];

describe("POST /v1/messages, JSON", () => {
  test("answers one Message echoing the requested model", async () => {
    const h = makeApp();
    const res = await postMessages(h, simpleBody());
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("application/json");
    expect(res.headers.get("request-id")).toMatch(/^req_/);
    const msg = await res.json();
    expect(msg).toMatchObject({
      type: "message",
      role: "assistant",
      model: "claude-sonnet-4-5",
      content: [{ type: "text", text: "Hello, world" }],
      stop_reason: "end_turn",
      stop_sequence: null,
      usage: { input_tokens: 12, output_tokens: 3 },
    });
    expect(msg.id).toMatch(/^msg_/);
  });

  test("the engine gets the alias target, the request id and sampling params", async () => {
    const h = makeApp({ config: { aliases: "*haiku*=small-model,*=default" } });
    const res = await postMessages(h, simpleBody({ model: "claude-3-5-haiku", temperature: 0.5, top_k: 5, stop_sequences: ["X"] }));
    expect((await res.json()).model).toBe("claude-3-5-haiku");
    const sent = h.engine.requests[0]!;
    expect(sent).toMatchObject({ model: "small-model", temperature: 0.5, topK: 5, stop: ["X"], maxTokens: 64 });
    expect(sent.requestId).toBe(res.headers.get("request-id")!);
    await postMessages(h, simpleBody({ model: "claude-opus-5-5" }));
    expect(h.engine.requests[1]!.model).toBe("tiny-demo");
  });

  test("tool calls and thinking come back as blocks", async () => {
    const h = makeApp({
      engine: {
        script: [
          { type: "started", promptTokens: 20, cachedTokens: 8 },
          { type: "thinking", text: "plan" },
          { type: "tool_call", name: "Bash", arguments: { command: "ls" } },
          { type: "done", finishReason: "tool_calls", promptTokens: 20, completionTokens: 4, cachedTokens: 8 },
        ],
      },
    });
    const msg = await (await postMessages(h, simpleBody({ thinking: { type: "enabled", budget_tokens: 1000 } }))).json();
    expect(msg.content.map((b: { type: string }) => b.type)).toEqual(["thinking", "tool_use"]);
    expect(msg.content[1]).toEqual({ type: "tool_use", id: expect.stringMatching(/^toolu_[0-9A-Za-z]{24}$/), name: "Bash", input: { command: "ls" } });
    expect(msg.stop_reason).toBe("tool_use");
    expect(msg.usage).toEqual({ input_tokens: 12, output_tokens: 4, cache_read_input_tokens: 8, cache_creation_input_tokens: 0 });
    expect(h.engine.requests[0]!.enableThinking).toBe(true);
  });

  test("unknown fields and beta features are accepted", async () => {
    const h = makeApp();
    const res = await postMessages(
      h,
      simpleBody({
        context_management: { edits: [] },
        output_config: { effort: "low" },
        metadata: { user_id: "u" },
        some_future_field: { x: 1 },
        system: [{ type: "text", text: "S", cache_control: { type: "ephemeral" } }],
        tools: [{ name: "T", description: "d", input_schema: { type: "object" }, strict: true, defer_loading: true, cache_control: { type: "ephemeral" } }],
        tool_choice: { type: "auto", disable_parallel_tool_use: true },
        messages: [{ role: "user", content: [{ type: "text", text: "hi", cache_control: { type: "ephemeral" }, citations: null }] }],
      }),
      { headers: { "anthropic-beta": "whatever-2099-01-01", "anthropic-version": "2023-06-01" } },
    );
    expect(res.status).toBe(200);
  });
});

describe("POST /v1/messages, SSE", () => {
  test("Anthropic's event sequence on the wire, parsed back", async () => {
    const h = makeApp();
    const res = await postMessages(h, simpleBody({ stream: true }));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toStartWith("text/event-stream");
    const text = await res.text();
    // Each frame: "event: X\ndata: {...}\n\n", event name equal to data.type.
    expect(text).toMatch(/^event: message_start\ndata: \{/);
    const evs = parseSse(text);
    expect(order(evs)).toEqual(TEXT_ORDER);
    for (const e of evs) expect(e.data.type).toBe(e.event);
    const acc = new MessageAccumulator();
    for (const e of evs) acc.apply(e);
    expect(acc.result()).toMatchObject({ model: "claude-sonnet-4-5", content: [{ type: "text", text: "Hello, world" }], stop_reason: "end_turn" });
  });

  test("?beta=true is accepted", async () => {
    const h = makeApp();
    const res = await h.app.handle(request("/v1/messages?beta=true", { method: "POST", json: simpleBody({ stream: true }) }));
    expect(order(await readSse(res))).toEqual(TEXT_ORDER);
  });

  test("errors before the first byte are a JSON status", async () => {
    const h = makeApp({ engine: { script: [{ type: "throw", error: new PromptTooLongError(9000, 4096) }] } });
    const res = await postMessages(h, simpleBody({ stream: true }));
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toContain("application/json");
    expect(await res.json()).toEqual({
      type: "error",
      error: { type: "invalid_request_error", message: "prompt is too long: 9000 tokens > 4096 maximum" },
      request_id: res.headers.get("request-id"),
    });
  });

  test("overloaded before start: 529 with retry-after and x-should-retry", async () => {
    const h = makeApp({ engine: { script: [{ type: "throw", error: new EngineOverloadedError("queue is full", 7) }] } });
    for (const stream of [true, false]) {
      const res = await postMessages(h, simpleBody({ stream }));
      expect(res.status).toBe(529);
      expect(res.headers.get("retry-after")).toBe("7");
      expect(res.headers.get("x-should-retry")).toBe("true");
      expect((await res.json()).error.type).toBe("overloaded_error");
    }
  });

  test("engine bad request -> 400", async () => {
    const h = makeApp({ engine: { script: [{ type: "throw", error: new EngineBadRequestError("template failed") }] } });
    const res = await postMessages(h, simpleBody());
    expect(res.status).toBe(400);
    expect((await res.json()).error).toEqual({ type: "invalid_request_error", message: "template failed" });
  });

  test("errors after the stream started -> event: error, then the stream closes", async () => {
    const h = makeApp({
      engine: {
        script: [
          { type: "started", promptTokens: 5, cachedTokens: 0 },
          { type: "text", text: "partial" },
          { type: "throw", error: new WorkerCrashedError("worker exited with signal SIGKILL", ["Killed"]) },
        ],
      },
    });
    const res = await postMessages(h, simpleBody({ stream: true }));
    expect(res.status).toBe(200);
    const evs = await readSse(res);
    expect(order(evs)).toEqual(["message_start", "ping", "content_block_start", "content_block_delta", "error"]);
    expect(evs.at(-1)!.data).toEqual({
      type: "error",
      error: { type: "api_error", message: expect.stringContaining("SIGKILL") },
      request_id: res.headers.get("request-id"),
    });
  });

  test("without a head start, even an early refusal arrives as message_start then event: error", async () => {
    const h = makeApp({
      config: { stream: { headStartMs: 0, pingIntervalMs: Number.POSITIVE_INFINITY } },
      engine: { script: [{ type: "throw", error: new EngineOverloadedError("busy", 3) }] },
    });
    const evs = await readSse(await postMessages(h, simpleBody({ stream: true })));
    expect(order(evs)).toEqual(["message_start", "ping", "error"]);
    expect((evs[2]!.data.error as { type: string }).type).toBe("overloaded_error");
  });

  test("a silent engine gets keep-alive pings, then the answer", async () => {
    const h = makeApp({
      config: { stream: { headStartMs: 0, pingIntervalMs: 5 } },
      engine: { script: [{ type: "hold" }, ...textScript()] },
    });
    const res = await postMessages(h, simpleBody({ stream: true }));
    const reader = res.body!.getReader();
    let text = "";
    while ((text.match(/event: ping/g) ?? []).length < 2) text += chunkText((await reader.read()).value);
    h.engine.release();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += chunkText(value);
    }
    const evs = parseSse(text);
    expect(evs[0]!.event).toBe("message_start");
    expect(evs.filter((e) => e.event === "message_start")).toHaveLength(1);
    expect(order(evs).slice(-7)).toEqual(TEXT_ORDER.slice(-7));
  });

  test("client disconnect (request signal) aborts the engine's generation", async () => {
    const h = makeApp({ engine: { script: [{ type: "started", promptTokens: 3, cachedTokens: 0 }, { type: "text", text: "a" }, { type: "hold" }, ...textScript()] } });
    const ac = new AbortController();
    const res = await h.app.handle(request("/v1/messages", { method: "POST", json: simpleBody({ stream: true }), signal: ac.signal }));
    const reader = res.body!.getReader();
    await reader.read(); // message_start is out: the stream has started
    ac.abort();
    await h.engine.idle();
    const id = res.headers.get("request-id")!;
    expect(h.engine.aborted).toContain(id);
    expect(h.engine.completed).not.toContain(id);
  });

  test("client cancelling the body aborts the engine's generation", async () => {
    const h = makeApp({ engine: { script: [{ type: "started", promptTokens: 3, cachedTokens: 0 }, { type: "hold" }, ...textScript()] } });
    const res = await postMessages(h, simpleBody({ stream: true }));
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    // The route notices at its next step; let the engine take one.
    h.engine.release();
    await h.engine.idle();
    const id = res.headers.get("request-id")!;
    expect(h.engine.aborted).toContain(id);
    expect(h.engine.completed).not.toContain(id);
  });

  test("non-streaming requests are aborted too when the client leaves", async () => {
    const h = makeApp({ engine: { script: [{ type: "started", promptTokens: 3, cachedTokens: 0 }, { type: "hold" }, ...textScript()] } });
    const ac = new AbortController();
    const pending = h.app.handle(request("/v1/messages", { method: "POST", json: simpleBody(), signal: ac.signal }));
    while (h.engine.requests.length === 0 || h.engine.running === 0) await Bun.sleep(1);
    ac.abort();
    await pending.catch(() => undefined);
    await h.engine.idle();
    expect(h.engine.aborted).toEqual([h.engine.requests[0]!.requestId]);
  });
});

describe("the Claude Code 2.1.328 fixture", () => {
  const fixture = loadFixture();
  const replay = (h: ReturnType<typeof makeApp>, body: Record<string, unknown>) => {
    const headers = { ...fixture.headers, "x-api-key": "test-token" };
    delete (headers as Record<string, string>)["accept-encoding"];
    return h.app.handle(new Request(BASE + fixture.url, { method: fixture.method, headers, body: JSON.stringify(body) }));
  };

  test("is served as SSE", async () => {
    const h = makeApp();
    const res = await replay(h, fixture.body);
    expect(res.status).toBe(200);
    const evs = await readSse(res);
    expect(order(evs)).toEqual(TEXT_ORDER);
    expect((evs[0]!.data.message as { model: string }).model).toBe(fixture.body.model);
    const sent = h.engine.requests[0]!;
    expect(JSON.stringify(sent.messages)).not.toContain("x-anthropic-billing-header");
    // The environment note is moved before the request; deferred tools stay out of the prompt.
    expect(sent.messages.map((m) => m.role)).toEqual(["system", "system", "user"]);
    const deferred = fixture.body.tools.filter((t: { defer_loading?: boolean }) => t.defer_loading === true).length;
    expect(sent.tools).toHaveLength(fixture.body.tools.length - deferred);
    expect(sent.enableThinking).toBe(true);
    expect(sent.maxTokens).toBe(4096); // clamped to the fake model's context
  });

  test("is served as JSON", async () => {
    const h = makeApp();
    const res = await replay(h, { ...fixture.body, stream: false });
    expect(res.status).toBe(200);
    expect((await res.json()).content).toEqual([{ type: "text", text: "Hello, world" }]);
  });
});
