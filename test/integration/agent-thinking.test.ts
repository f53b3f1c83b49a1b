/**
 * Thinking through the real server, real worker and the thinking fixture model, checked with the
 * official @anthropic-ai/sdk and on the raw wire: thinking blocks (thinking_delta, then
 * signature_delta) before the text when enabled; no reasoning anywhere when not; earlier
 * thinking blocks in the history are accepted.
 */
import Anthropic from "@anthropic-ai/sdk";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { checkAnthropicStream, parseSse, type WireEvent } from "../support/sse";
import { DEFAULT_TOKEN, type RunningServer, startServer, testPython } from "../support/server-process";
import { THINK_ANSWER, THINK_REASONING, thinkModelDir } from "../support/think-model";

setDefaultTimeout(180_000);

const MODEL = "claude-opus-5-5";
const THINKING = { type: "enabled", budget_tokens: 1024 } as const;

let server: RunningServer;
let client: Anthropic;

beforeAll(async () => {
  server = await startServer({ args: ["--python", testPython(), "--model", await thinkModelDir()] });
  client = new Anthropic({ baseURL: server.url, apiKey: DEFAULT_TOKEN, maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  await server?.stop();
});

async function rawStream(body: Record<string, unknown>): Promise<WireEvent[]> {
  const res = await fetch(`${server.url}/v1/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": DEFAULT_TOKEN, "anthropic-version": "2023-06-01" },
    body: JSON.stringify({ ...body, stream: true }),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`status ${res.status}: ${text}`);
  return parseSse(text);
}

const ask = [{ role: "user" as const, content: "Say the marker." }];
const deltaTypes = (events: WireEvent[], index: number) =>
  events.filter((e) => e.event === "content_block_delta" && e.data.index === index).map((e) => e.data.delta.type as string);

describe("thinking enabled", () => {
  test("raw SSE: a thinking block (thinking_delta, then signature_delta) comes before the text block", async () => {
    const events = await rawStream({ model: MODEL, max_tokens: 64, thinking: THINKING, messages: ask });
    const s = checkAnthropicStream(events);
    expect(s.stopReason).toBe("end_turn");
    const starts = events.filter((e) => e.event === "content_block_start").map((e) => e.data.content_block.type as string);
    expect(starts).toEqual(["thinking", "text"]);
    const kinds = deltaTypes(events, 0);
    expect(kinds.length).toBeGreaterThanOrEqual(2);
    expect(kinds.at(-1)).toBe("signature_delta");
    expect(new Set(kinds.slice(0, -1))).toEqual(new Set(["thinking_delta"]));
    expect(deltaTypes(events, 1).every((k) => k === "text_delta")).toBe(true);
  });

  test("the SDK's finalMessage has the thinking (with a signature), then the answer", async () => {
    const stream = client.messages.stream({ model: MODEL, max_tokens: 64, thinking: THINKING, messages: ask });
    const final = await stream.finalMessage();
    expect(final.content.map((b) => b.type)).toEqual(["thinking", "text"]);
    const thinking = final.content[0] as Anthropic.ThinkingBlock;
    expect(thinking.thinking).toBe(THINK_REASONING);
    expect(thinking.signature.length).toBeGreaterThan(0);
    expect((final.content[1] as Anthropic.TextBlock).text).toBe(THINK_ANSWER);
    expect(final.stop_reason).toBe("end_turn");
  });

  test("a history with an earlier thinking block is accepted", async () => {
    const first = await client.messages.create({ model: MODEL, max_tokens: 64, thinking: THINKING, messages: ask });
    expect(first.content[0]?.type).toBe("thinking");
    const second = await client.messages.create({
      model: MODEL,
      max_tokens: 64,
      thinking: THINKING,
      messages: [...ask, { role: "assistant", content: first.content as Anthropic.ContentBlockParam[] }, { role: "user", content: "Again." }],
    });
    expect(second.content.map((b) => b.type)).toEqual(["thinking", "text"]);
    expect((second.content[1] as Anthropic.TextBlock).text).toBe(THINK_ANSWER);
  });
});

describe("thinking disabled or absent", () => {
  for (const [label, thinking] of [
    ["absent", undefined],
    ["disabled", { type: "disabled" as const }],
  ] as const) {
    test(`${label}: no thinking block, and the reasoning is not in the answer`, async () => {
      const body: Record<string, unknown> = { model: MODEL, max_tokens: 64, messages: ask };
      if (thinking) body.thinking = thinking;
      const events = await rawStream(body);
      const s = checkAnthropicStream(events);
      const starts = events.filter((e) => e.event === "content_block_start").map((e) => e.data.content_block.type as string);
      expect(starts).toEqual(["text"]);
      const text = s.blocks.map((b) => (b.type === "text" ? b.text : "")).join("");
      expect(text).toBe(THINK_ANSWER);
      expect(text).not.toContain("pensieve-reasoning");
      expect(text).not.toContain("<think>");
    });
  }
});
