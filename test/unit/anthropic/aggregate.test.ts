import { describe, expect, test } from "bun:test";
import { aggregate, aggregateEvents, MessageAccumulator } from "../../../src/anthropic/aggregate";
import { StreamConverter, thinkingSignature } from "../../../src/anthropic/stream";
import type { EngineEvent } from "../../../src/engine/types";
import type { MessageT } from "../../../src/anthropic/schemas";
import { httpDefaults } from "../../../src/config";

// The converter mints every tool_use id in Anthropic's style; engines give none.
const TOOLU_ID = /^toolu_[0-9A-Za-z]{24}$/;

const opts = { messageId: "msg_1", model: "claude-x", cancelledRetryAfterSeconds: httpDefaults.cancelledRetryAfterSeconds };
const events: EngineEvent[] = [
  { type: "started", promptTokens: 50, cachedTokens: 20 },
  { type: "thinking", text: "hmm" },
  { type: "text", text: "I will " },
  { type: "text", text: "look." },
  { type: "tool_call", name: "Read", arguments: { file_path: "/a" } },
  { type: "done", finishReason: "tool_calls", promptTokens: 50, completionTokens: 9, cachedTokens: 20 },
];

async function* from(list: EngineEvent[]) {
  for (const e of list) yield e;
}

describe("aggregate", () => {
  test("folds engine events into one Message", () => {
    expect(aggregateEvents(events, opts)).toEqual({
      id: "msg_1",
      type: "message",
      role: "assistant",
      model: "claude-x",
      content: [
        { type: "thinking", thinking: "hmm", signature: thinkingSignature("hmm") },
        { type: "text", text: "I will look." },
        { type: "tool_use", id: expect.stringMatching(TOOLU_ID), name: "Read", input: { file_path: "/a" } },
      ],
      stop_reason: "tool_use",
      stop_sequence: null,
      usage: { input_tokens: 30, output_tokens: 9, cache_read_input_tokens: 20, cache_creation_input_tokens: 0 },
    });
  });

  test("async variant gives the same message", async () => {
    // Tool_use ids are minted per conversion: compare everything else.
    const sameIds = (m: MessageT) => ({ ...m, content: m.content.map((b) => (b.type === "tool_use" ? { ...b, id: "toolu_" } : b)) });
    expect(sameIds(await aggregate(from(events), opts))).toEqual(sameIds(aggregateEvents(events, opts)));
  });

  test("stop_sequence and max_tokens", () => {
    const base: EngineEvent[] = [{ type: "started", promptTokens: 5, cachedTokens: 0 }, { type: "text", text: "x" }];
    const m1 = aggregateEvents(
      [...base, { type: "done", finishReason: "stop_sequence", stopSequence: "END", promptTokens: 5, completionTokens: 1, cachedTokens: 0 }],
      opts,
    );
    expect([m1.stop_reason, m1.stop_sequence]).toEqual(["stop_sequence", "END"]);
    const m2 = aggregateEvents([...base, { type: "done", finishReason: "length", promptTokens: 5, completionTokens: 1, cachedTokens: 0 }], opts);
    expect([m2.stop_reason, m2.stop_sequence]).toEqual(["max_tokens", null]);
  });

  test("an engine that ends without done is an error", async () => {
    await expect(aggregate(from(events.slice(0, 3)), opts)).rejects.toThrow(/without a done/);
  });

  test("engine errors propagate", async () => {
    async function* failing(): AsyncGenerator<EngineEvent> {
      yield { type: "started", promptTokens: 1, cachedTokens: 0 };
      throw new Error("boom");
    }
    await expect(aggregate(failing(), opts)).rejects.toThrow("boom");
  });

  test("accumulator joins input_json_delta fragments", () => {
    const acc = new MessageAccumulator();
    for (const e of new StreamConverter(opts).start()) acc.apply(e);
    acc.apply({ event: "content_block_start", data: { type: "content_block_start", index: 0, content_block: { type: "tool_use", id: "t", name: "n", input: {} } } });
    for (const part of ['{"a":', '[1,2', "]}"])
      acc.apply({ event: "content_block_delta", data: { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: part } } });
    acc.apply({ event: "content_block_stop", data: { type: "content_block_stop", index: 0 } });
    expect(acc.result().content).toEqual([{ type: "tool_use", id: "t", name: "n", input: { a: [1, 2] } }]);
  });
});
