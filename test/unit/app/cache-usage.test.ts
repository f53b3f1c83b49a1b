import { describe, expect, test } from "bun:test";
import type { GenerateRequest } from "../../../src/engine/types";
import type { ScriptStep } from "../../support/fake-engine";
import { makeApp, postMessages, readSse, request, simpleBody } from "./harness";

// An engine that counts writes as the worker does: only up to the breakpoint the request names.
// 100 prompt tokens, 20 read from the cache, 50 up to the breakpoint (when there is one).
function script(req: GenerateRequest): ScriptStep[] {
  const created = req.cachePrefix ? 50 - 20 : 0;
  return [
    { type: "started", promptTokens: 100, cachedTokens: 20 },
    { type: "text", text: "ok" },
    { type: "done", finishReason: "stop", promptTokens: 100, completionTokens: 1, cachedTokens: 20, cacheCreatedTokens: created },
  ];
}

const withBreakpoint = simpleBody({
  system: [{ type: "text", text: "You are an agent.", cache_control: { type: "ephemeral" } }],
});

describe("usage follows Anthropic's cache accounting", () => {
  test("no cache_control: no cache writes; fresh tokens are input_tokens", async () => {
    const h = makeApp({ engine: { script } });
    const msg = await (await postMessages(h, simpleBody())).json();
    expect(h.engine.requests[0]!.cachePrefix).toBeUndefined();
    expect(msg.usage).toEqual({ input_tokens: 80, output_tokens: 1, cache_read_input_tokens: 20, cache_creation_input_tokens: 0 });
  });

  test("cache_control on the system prompt: the engine is told the prefix; writes are reported", async () => {
    const h = makeApp({ engine: { script } });
    const msg = await (await postMessages(h, withBreakpoint)).json();
    expect(h.engine.requests[0]!.cachePrefix).toEqual({ messages: 1 });
    expect(msg.usage).toEqual({ input_tokens: 50, output_tokens: 1, cache_read_input_tokens: 20, cache_creation_input_tokens: 30 });
  });

  test("SSE: message_delta carries the same final split as the JSON body; both sum to the prompt", async () => {
    const h = makeApp({ engine: { script } });
    const events = await readSse(await postMessages(h, { ...withBreakpoint, stream: true }));
    const start = (events.find((e) => e.event === "message_start")!.data.message as { usage: Record<string, number> }).usage;
    const final = events.find((e) => e.event === "message_delta")!.data.usage as Record<string, number>;
    expect(final).toEqual({ input_tokens: 50, output_tokens: 1, cache_read_input_tokens: 20, cache_creation_input_tokens: 30 });
    const sum = (u: Record<string, number>) => u.input_tokens! + u.cache_read_input_tokens! + u.cache_creation_input_tokens!;
    expect(sum(start)).toBe(100);
    expect(sum(final)).toBe(100);
    expect(start.cache_read_input_tokens).toBe(20);
  });
});

describe("count_tokens refuses hopeless sizes up front, as /v1/messages does", () => {
  test("a body that cannot fit however it tokenizes is a 400 before the engine counts it", async () => {
    let counted = 0;
    const h = makeApp({ engine: { model: { contextLength: 1000 }, countTokens: () => ++counted } });
    const body = { model: "claude-x", messages: [{ role: "user", content: "x".repeat(64 * 1000 + 64) }] };
    const res = await h.app.handle(request("/v1/messages/count_tokens", { method: "POST", json: body }));
    expect(res.status).toBe(400);
    expect((await res.json()).error).toEqual({ type: "invalid_request_error", message: "prompt is too long: 1001 tokens > 1000 maximum" });
    expect(counted).toBe(0);
    const fits = await h.app.handle(request("/v1/messages/count_tokens", { method: "POST", json: { ...body, messages: [{ role: "user", content: "hi" }] } }));
    expect(fits.status).toBe(200);
  });
});
