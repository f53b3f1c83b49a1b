import { describe, expect, test } from "bun:test";
import { aggregateEvents } from "../../../src/anthropic/aggregate";
import { StreamConverter, usageOf } from "../../../src/anthropic/stream";
import { toEngineEvent } from "../../../src/bridge/generation-job";
import type { EngineEvent } from "../../../src/engine/types";
import { httpDefaults } from "../../../src/config";

const opts = { messageId: "msg_1", model: "claude-x", cancelledRetryAfterSeconds: httpDefaults.cancelledRetryAfterSeconds };
const events = (created?: number): EngineEvent[] => [
  { type: "started", promptTokens: 100, cachedTokens: 60 },
  { type: "text", text: "ok" },
  {
    type: "done",
    finishReason: "stop",
    promptTokens: 100,
    completionTokens: 2,
    cachedTokens: 60,
    ...(created === undefined ? {} : { cacheCreatedTokens: created }),
  },
];
const total = (u: { input_tokens: number; cache_read_input_tokens?: number | null; cache_creation_input_tokens?: number | null }) =>
  u.input_tokens + (u.cache_read_input_tokens ?? 0) + (u.cache_creation_input_tokens ?? 0);

describe("usage: input_tokens excludes cache reads and cache writes (Anthropic)", () => {
  test("usageOf splits the prompt three ways and clamps", () => {
    expect(usageOf(100, 60, 2, 40)).toEqual({ input_tokens: 0, output_tokens: 2, cache_read_input_tokens: 60, cache_creation_input_tokens: 40 });
    expect(usageOf(100, 60, 2, 10)).toEqual({ input_tokens: 30, output_tokens: 2, cache_read_input_tokens: 60, cache_creation_input_tokens: 10 });
    expect(usageOf(100, 60, 2)).toEqual({ input_tokens: 40, output_tokens: 2, cache_read_input_tokens: 60, cache_creation_input_tokens: 0 });
    // A worker figure past the prompt never makes input_tokens negative.
    expect(usageOf(100, 60, 2, 500)).toEqual({ input_tokens: 0, output_tokens: 2, cache_read_input_tokens: 60, cache_creation_input_tokens: 40 });
  });

  test("stream: message_start (writes not yet known) and message_delta both sum to the prompt", () => {
    const conv = new StreamConverter(opts);
    const out = events(40).flatMap((e) => conv.push(e));
    const start = out.find((e) => e.event === "message_start")!.data.message as { usage: Parameters<typeof total>[0] };
    const delta = out.find((e) => e.event === "message_delta")!.data.usage as Record<string, number>;
    expect(start.usage.cache_creation_input_tokens).toBe(0);
    expect(total(start.usage)).toBe(100);
    expect(delta).toEqual({ input_tokens: 0, output_tokens: 2, cache_read_input_tokens: 60, cache_creation_input_tokens: 40 });
    expect(total(delta as unknown as Parameters<typeof total>[0])).toBe(100);
  });

  test("aggregate: the final message carries the cache writes; engines without the figure report 0", () => {
    expect(aggregateEvents(events(40), opts).usage).toEqual({
      input_tokens: 0,
      output_tokens: 2,
      cache_read_input_tokens: 60,
      cache_creation_input_tokens: 40,
    });
    expect(aggregateEvents(events(), opts).usage).toEqual({
      input_tokens: 40,
      output_tokens: 2,
      cache_read_input_tokens: 60,
      cache_creation_input_tokens: 0,
    });
  });

  test("the bridge maps the worker's cache_created_tokens onto done", () => {
    const done = toEngineEvent({
      v: 1,
      type: "done",
      id: "7",
      finish_reason: "stop",
      stop_sequence: null,
      prompt_tokens: 100,
      completion_tokens: 2,
      cached_tokens: 60,
      cache_created_tokens: 40,
    });
    expect(done).toEqual({ type: "done", finishReason: "stop", promptTokens: 100, completionTokens: 2, cachedTokens: 60, cacheCreatedTokens: 40 });
    const old = toEngineEvent({ v: 1, type: "done", id: "7", finish_reason: "stop", prompt_tokens: 1, completion_tokens: 1, cached_tokens: 0 });
    expect(old && old !== "error" && "cacheCreatedTokens" in old).toBe(false);
  });
});
