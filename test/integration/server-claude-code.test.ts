/**
 * The Claude Code 2.1.328 first-turn request (test/fixtures/claude-code-first-turn.json),
 * replayed against the real server from source with the real worker and the tiny model:
 * raw, exactly as captured (max_tokens 128000 must be clamped, not refused), and through the SDK.
 */
import Anthropic from "@anthropic-ai/sdk";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { checkAnthropicStream, parseSse, type WireEvent } from "../support/sse";
import {
  type CapturedRequest,
  DEFAULT_TOKEN,
  loadCapturedRequest,
  replayCaptured,
  type RunningServer,
  startServer,
  testPython,
  tinyModelDir,
} from "../support/server-process";

setDefaultTimeout(300_000);

let server: RunningServer;
let client: Anthropic;
let fixture: CapturedRequest;
let counted = 0;

beforeAll(async () => {
  fixture = await loadCapturedRequest();
  server = await startServer({ args: ["--python", testPython(), "--model", await tinyModelDir()] });
  client = new Anthropic({ baseURL: server.url, apiKey: DEFAULT_TOKEN, maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  await server?.stop();
});

describe("the Claude Code fixture", () => {
  test("is what the tests expect: a streaming ?beta=true request with max_tokens 128000", () => {
    expect(fixture.method).toBe("POST");
    expect(fixture.url).toBe("/v1/messages?beta=true");
    expect(fixture.body).toMatchObject({ stream: true, max_tokens: 128000, model: "claude-opus-5-5" });
  });

  test("count_tokens (with the captured headers) counts the whole prompt", async () => {
    const { stream: _s, max_tokens: _m, ...body } = fixture.body;
    const res = await replayCaptured(server.url, { ...fixture, url: "/v1/messages/count_tokens?beta=true", body });
    expect(res.status).toBe(200);
    counted = ((await res.json()) as { input_tokens: number }).input_tokens;
    expect(counted).toBeGreaterThan(1000);
  });

  test("replayed raw, as captured, the stream is valid SSE in Anthropic's grammar", async () => {
    const res = await replayCaptured(server.url, fixture);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = parseSse(await res.text());
    const s = checkAnthropicStream(events);
    expect(s.message.model).toBe("claude-opus-5-5");
    expect(s.message.usage.input_tokens + (s.message.usage.cache_read_input_tokens ?? 0)).toBe(counted);
    // Cache writes are known at the end: the final usage moves them out of input_tokens.
    expect(s.usage.input_tokens + (s.usage.cache_read_input_tokens ?? 0) + (s.usage.cache_creation_input_tokens ?? 0)).toBe(counted);
    expect(["end_turn", "max_tokens", "tool_use"]).toContain(s.stopReason);
    // Clamped to what the context leaves after the prompt, never refused.
    const h = (await (await fetch(`${server.url}/health`, { headers: { "x-api-key": DEFAULT_TOKEN } })).json()) as Record<string, any>;
    const context: number = h.engine.model?.contextLength ?? 65536;
    expect(s.usage.output_tokens).toBeLessThanOrEqual(context - counted);
    expect(s.usage.output_tokens).toBeGreaterThan(0);
  });

  test("replayed through the SDK's beta stream (max_tokens lowered), events and finalMessage agree", async () => {
    const { stream: _s, ...body } = fixture.body;
    const betas = fixture.headers["anthropic-beta"]!.split(",");
    const params = { ...body, max_tokens: 48, betas } as unknown as Anthropic.Beta.Messages.MessageCreateParamsStreaming;
    const stream = client.beta.messages.stream(params);
    const events: WireEvent[] = [];
    for await (const ev of stream) events.push({ event: ev.type, data: structuredClone(ev) as unknown as WireEvent["data"], raw: "" });
    const final = await stream.finalMessage();
    const s = checkAnthropicStream(events);
    expect(final.model).toBe("claude-opus-5-5");
    expect(final.stop_reason).toBe(s.stopReason as Anthropic.Beta.Messages.BetaStopReason);
    expect(["end_turn", "max_tokens", "tool_use"]).toContain(final.stop_reason!);
    expect(final.usage.output_tokens).toBeLessThanOrEqual(48);
    expect(final.usage.input_tokens + (final.usage.cache_read_input_tokens ?? 0) + (final.usage.cache_creation_input_tokens ?? 0)).toBe(counted);
    expect(final.content.map((b) => b.type as string)).toEqual(s.blocks.map((b) => b.type));
  });
});
