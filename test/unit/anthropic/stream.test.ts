import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import type { EngineEvent } from "../../../src/engine/types";
import {
  errorEvent,
  type SseEvent,
  StreamConverter,
  stopReasonOf,
  thinkingSignature,
  usageOf,
} from "../../../src/anthropic/stream";

const opts = { messageId: "msg_test", model: "claude-test" };
const started = (promptTokens = 10, cachedTokens = 0): EngineEvent => ({ type: "started", promptTokens, cachedTokens });
const done = (finishReason: Extract<EngineEvent, { type: "done" }>["finishReason"] = "stop", extra: Partial<EngineEvent> = {}): EngineEvent =>
  ({ type: "done", finishReason, promptTokens: 10, completionTokens: 5, cachedTokens: 0, ...extra }) as EngineEvent;

function run(events: EngineEvent[], o: Partial<typeof opts & { omitThinking: boolean }> = {}): SseEvent[] {
  const conv = new StreamConverter({ ...opts, ...o });
  return events.flatMap((e) => conv.push(e));
}

const names = (evs: SseEvent[]) => evs.map((e) => e.event);
const deltaTypes = (evs: SseEvent[]) =>
  evs.filter((e) => e.event === "content_block_delta").map((e) => (e.data.delta as { type: string }).type);

describe("StreamConverter", () => {
  test("text answer: Anthropic's exact event order", () => {
    const evs = run([started(), { type: "text", text: "Hel" }, { type: "text", text: "lo" }, done()]);
    expect(names(evs)).toEqual([
      "message_start",
      "ping",
      "content_block_start",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    for (const e of evs) expect(e.data.type).toBe(e.event);
  });

  test("message_start carries id, echoed model, empty content and the known usage", () => {
    const [start] = run([started(100, 60)]);
    expect(start!.data).toEqual({
      type: "message_start",
      message: {
        id: "msg_test",
        type: "message",
        role: "assistant",
        model: "claude-test",
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: 40, output_tokens: 0, cache_read_input_tokens: 60, cache_creation_input_tokens: 0 },
      },
    });
  });

  test("start() before the engine speaks: zero usage, then started only pings", () => {
    const conv = new StreamConverter(opts);
    const first = conv.start();
    expect(names(first)).toEqual(["message_start"]);
    expect((first[0]!.data.message as { usage: { input_tokens: number } }).usage.input_tokens).toBe(0);
    expect(conv.start()).toEqual([]);
    expect(names(conv.push(started()))).toEqual(["ping"]);
  });

  test("ping() starts the message if needed", () => {
    const conv = new StreamConverter(opts);
    expect(names(conv.ping())).toEqual(["message_start", "ping"]);
    expect(names(conv.ping())).toEqual(["ping"]);
  });

  test("progress events become pings while the prompt is processed", () => {
    const evs = run([
      started(),
      { type: "progress", processed: 512, total: 2048 },
      { type: "progress", processed: 1024, total: 2048 },
      { type: "text", text: "x" },
      done(),
    ]);
    expect(names(evs).slice(0, 4)).toEqual(["message_start", "ping", "ping", "ping"]);
  });

  test("text block start and deltas", () => {
    const evs = run([started(), { type: "text", text: "a" }, done()]);
    expect(evs[2]!.data).toEqual({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } });
    expect(evs[3]!.data).toEqual({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "a" } });
    expect(evs[4]!.data).toEqual({ type: "content_block_stop", index: 0 });
  });

  test("empty text chunks produce nothing", () => {
    const evs = run([started(), { type: "text", text: "" }, done()]);
    expect(names(evs)).toEqual(["message_start", "ping", "message_delta", "message_stop"]);
  });

  test("message_delta: stop reason and cumulative usage with the cache split", () => {
    const evs = run([started(), { type: "text", text: "a" }, done("stop", { promptTokens: 300, cachedTokens: 200, completionTokens: 7 })]);
    const delta = evs.find((e) => e.event === "message_delta")!;
    expect(delta.data).toEqual({
      type: "message_delta",
      delta: { stop_reason: "end_turn", stop_sequence: null },
      usage: { input_tokens: 100, output_tokens: 7, cache_read_input_tokens: 200, cache_creation_input_tokens: 0 },
    });
  });

  test.each([
    ["stop", "end_turn"],
    ["length", "max_tokens"],
    ["stop_sequence", "stop_sequence"],
    ["tool_calls", "tool_use"],
    ["cancelled", null],
  ] as const)("finish %s -> stop_reason %s", (finish, reason) => {
    expect(stopReasonOf(finish, false)).toBe(reason);
  });

  test("stop_sequence carries the matched string; other reasons carry null", () => {
    const evs = run([started(), { type: "text", text: "a" }, done("stop_sequence", { stopSequence: "###" })]);
    expect(evs.find((e) => e.event === "message_delta")!.data.delta).toEqual({ stop_reason: "stop_sequence", stop_sequence: "###" });
    const evs2 = run([started(), done("length", { stopSequence: "###" })]);
    expect(evs2.find((e) => e.event === "message_delta")!.data.delta).toEqual({ stop_reason: "max_tokens", stop_sequence: null });
  });

  test("thinking block: thinking_delta(s), then signature_delta, then stop; text follows at index 1", () => {
    const evs = run([
      started(),
      { type: "thinking", text: "Let me " },
      { type: "thinking", text: "think." },
      { type: "text", text: "Answer" },
      done(),
    ]);
    expect(names(evs)).toEqual([
      "message_start",
      "ping",
      "content_block_start",
      "content_block_delta",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "content_block_start",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    expect(evs[2]!.data.content_block).toEqual({ type: "thinking", thinking: "", signature: "" });
    expect(deltaTypes(evs)).toEqual(["thinking_delta", "thinking_delta", "signature_delta", "text_delta"]);
    expect(evs[5]!.data.delta).toEqual({ type: "signature_delta", signature: thinkingSignature("Let me think.") });
    expect(evs[7]!.data).toEqual({ type: "content_block_start", index: 1, content_block: { type: "text", text: "" } });
  });

  test("thinking display omitted: a signature but no thinking text", () => {
    const evs = run([started(), { type: "thinking", text: "secret" }, { type: "text", text: "ok" }, done()], { omitThinking: true });
    expect(deltaTypes(evs)).toEqual(["signature_delta", "text_delta"]);
    expect(JSON.stringify(evs)).not.toContain("secret");
  });

  test("tool_use block: start with empty input, one input_json_delta, stop; stop_reason tool_use", () => {
    const args = { command: "ls -la", timeout: 5 };
    const evs = run([
      started(),
      { type: "text", text: "Running." },
      { type: "tool_call", name: "Bash", arguments: args },
      done("tool_calls"),
    ]);
    expect(names(evs)).toEqual([
      "message_start",
      "ping",
      "content_block_start",
      "content_block_delta",
      "content_block_stop",
      "content_block_start",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    expect(evs[5]!.data).toEqual({
      type: "content_block_start",
      index: 1,
      content_block: { type: "tool_use", id: expect.stringMatching(/^toolu_[0-9A-Za-z]{24}$/), name: "Bash", input: {} },
    });
    const delta = evs[6]!.data.delta as { type: string; partial_json: string };
    expect(delta.type).toBe("input_json_delta");
    expect(JSON.parse(delta.partial_json)).toEqual(args);
    expect(evs[8]!.data.delta).toEqual({ stop_reason: "tool_use", stop_sequence: null });
  });

  test("a tool call with a plain stop still reports tool_use", () => {
    const evs = run([started(), { type: "tool_call", name: "Read", arguments: {} }, done("stop")]);
    expect(evs.find((e) => e.event === "message_delta")!.data.delta).toEqual({ stop_reason: "tool_use", stop_sequence: null });
  });

  test("several tool calls get consecutive indexes and distinct minted ids", () => {
    const evs = run([
      started(),
      { type: "tool_call", name: "Read", arguments: { path: "x" } },
      { type: "tool_call", name: "Read", arguments: { path: "y" } },
      done("tool_calls"),
    ]);
    const starts = evs.filter((e) => e.event === "content_block_start");
    expect(starts.map((e) => e.data.index)).toEqual([0, 1]);
    const ids = starts.map((e) => (e.data.content_block as { id: string }).id);
    for (const id of ids) expect(id).toMatch(/^toolu_[0-9A-Za-z]{24}$/);
    expect(new Set(ids).size).toBe(2);
  });

  test("events after done are dropped", () => {
    const conv = new StreamConverter(opts);
    conv.push(started());
    conv.push(done());
    expect(conv.isFinished).toBe(true);
    expect(conv.push({ type: "text", text: "late" })).toEqual([]);
    expect(conv.ping()).toEqual([]);
  });

  test("errorEvent shape", () => {
    expect(errorEvent("overloaded_error", "Overloaded", "req_1")).toEqual({
      event: "error",
      data: { type: "error", error: { type: "overloaded_error", message: "Overloaded" }, request_id: "req_1" },
    });
  });

  test("usageOf clamps a cache count above the prompt", () => {
    expect(usageOf(10, 50, 1)).toEqual({ input_tokens: 0, output_tokens: 1, cache_read_input_tokens: 10, cache_creation_input_tokens: 0 });
  });
});

// Any mix of text, thinking and tool calls yields a well-formed stream.
const contentEvent = fc.oneof(
  fc.string({ maxLength: 8 }).map((text): EngineEvent => ({ type: "text", text })),
  fc.string({ maxLength: 8 }).map((text): EngineEvent => ({ type: "thinking", text })),
  fc.record({ name: fc.constantFrom("Bash", "Read"), n: fc.integer() }).map(
    ({ name, n }): EngineEvent => ({ type: "tool_call", name, arguments: { n } }),
  ),
  fc.integer({ min: 0, max: 100 }).map((processed): EngineEvent => ({ type: "progress", processed, total: 100 })),
);

describe("StreamConverter invariants (property-based)", () => {
  test("structure holds for any event sequence", () => {
    fc.assert(
      fc.property(fc.array(contentEvent, { maxLength: 30 }), fc.constantFrom("stop", "length", "tool_calls"), (content, finish) => {
        const evs = run([started(), ...content, done(finish)]);
        expect(evs[0]!.event).toBe("message_start");
        expect(evs.at(-2)!.event).toBe("message_delta");
        expect(evs.at(-1)!.event).toBe("message_stop");
        expect(evs.filter((e) => e.event === "message_start")).toHaveLength(1);
        let open: number | null = null;
        let next = 0;
        let text = "";
        for (const e of evs) {
          expect(e.data.type).toBe(e.event);
          if (e.event === "content_block_start") {
            expect(open).toBeNull();
            expect(e.data.index).toBe(next);
            open = next++;
          } else if (e.event === "content_block_delta") {
            expect(e.data.index).toBe(open!);
            const d = e.data.delta as { type: string; text?: string };
            if (d.type === "text_delta") text += d.text;
          } else if (e.event === "content_block_stop") {
            expect(e.data.index).toBe(open!);
            open = null;
          }
        }
        expect(open).toBeNull();
        const expectedText = content.map((e) => (e.type === "text" ? e.text : "")).join("");
        expect(text).toBe(expectedText);
        const tools = content.filter((e) => e.type === "tool_call").length;
        const reason = (evs.at(-2)!.data.delta as { stop_reason: string }).stop_reason;
        if (finish === "length") expect(reason).toBe("max_tokens");
        else expect(reason).toBe(tools > 0 || finish === "tool_calls" ? "tool_use" : "end_turn");
      }),
      { numRuns: 300 },
    );
  });
});
