/** Tool input streamed as several input_json_delta fragments, as Anthropic does. */
import { describe, expect, test } from "bun:test";
import { aggregateEvents } from "../../../src/anthropic/aggregate";
import { JSON_FRAGMENT_CHARS, jsonFragments, StreamConverter } from "../../../src/anthropic/stream";
import type { EngineEvent } from "../../../src/engine/types";
import { httpDefaults } from "../../../src/config";

// The converter mints every tool_use id in Anthropic's style; engines give none.
const TOOLU_ID = /^toolu_[0-9A-Za-z]{24}$/;

const started: EngineEvent = { type: "started", promptTokens: 10, cachedTokens: 0 };
const done: EngineEvent = { type: "done", finishReason: "tool_calls", promptTokens: 10, completionTokens: 5, cachedTokens: 0 };

describe("input_json_delta fragments", () => {
  test("a long input is split into pieces that join back to the JSON", () => {
    const json = JSON.stringify({ command: "echo pensieve-tool-ok", description: "Print a marker to check the tool loop", n: 3 });
    const parts = jsonFragments(json);
    expect(parts.length).toBeGreaterThan(1);
    for (const p of parts) expect(p.length).toBeLessThanOrEqual(JSON_FRAGMENT_CHARS);
    expect(parts.join("")).toBe(json);
  });

  test("a cut never falls inside a surrogate pair; empty input is {}", () => {
    const json = JSON.stringify({ s: "\u{1F30D}".repeat(40) });
    for (const size of [2, 3, 5, 7]) {
      const parts = jsonFragments(json, size);
      expect(parts.join("")).toBe(json);
      for (const p of parts) {
        const last = p.charCodeAt(p.length - 1);
        expect(last >= 0xd800 && last <= 0xdbff).toBe(false);
      }
    }
    expect(jsonFragments("")).toEqual(["{}"]);
  });

  test("the converter streams start, several fragments, stop; the message has the parsed input", () => {
    const args = { command: "echo pensieve-tool-ok", description: "A description long enough to need pieces" };
    const events: EngineEvent[] = [started, { type: "tool_call", name: "Bash", arguments: args }, done];
    const conv = new StreamConverter({ messageId: "msg_1", model: "m" });
    const sse = events.flatMap((e) => conv.push(e));
    const block = sse.filter((e) => e.event.startsWith("content_block"));
    expect(block[0]?.data).toMatchObject({ type: "content_block_start", content_block: { type: "tool_use", id: expect.stringMatching(TOOLU_ID), input: {} } });
    expect(block.at(-1)?.event).toBe("content_block_stop");
    const deltas = block.slice(1, -1);
    expect(deltas.length).toBeGreaterThan(1);
    for (const d of deltas) expect((d.data.delta as { type: string }).type).toBe("input_json_delta");
    const msg = aggregateEvents(events, { messageId: "msg_1", model: "m", cancelledRetryAfterSeconds: httpDefaults.cancelledRetryAfterSeconds });
    expect(msg.content).toEqual([{ type: "tool_use", id: expect.stringMatching(TOOLU_ID), name: "Bash", input: args }]);
    expect(msg.stop_reason).toBe("tool_use");
  });
});
