import { describe, expect, test } from "bun:test";
import { answeredCalls, answerRepeatedCalls, toolHistoryAsText } from "../../../src/anthropic/answered-calls";
import type { ChatMessage, EngineEvent, GenerateRequest } from "../../../src/engine/types";

const CALL = { id: "c1", type: "function" as const, function: { name: "get_weather", arguments: { city: "Paris" } } };
const HISTORY: ChatMessage[] = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "What's the weather in Paris?" },
  { role: "assistant", content: "", tool_calls: [CALL] },
  { role: "tool", tool_call_id: "c1", content: "18°C and sunny" },
];
const TOOLS = [{ type: "function" as const, function: { name: "get_weather", parameters: { type: "object" } } }];

function request(over: Partial<GenerateRequest> = {}): GenerateRequest {
  return { requestId: "r1", maxTokens: 64, messages: HISTORY, tools: TOOLS, cachePrefix: { messages: 2 }, ...over };
}

const started = (promptTokens: number): EngineEvent => ({ type: "started", promptTokens, cachedTokens: 3 });
const done = (completionTokens: number, finishReason: "stop" | "tool_calls" = "stop"): EngineEvent => ({
  type: "done",
  finishReason,
  promptTokens: 999,
  completionTokens,
  cachedTokens: 0,
  cacheCreatedTokens: 7,
});

/** A fake engine: one scripted event list per call, recording requests and whether each was aborted. */
function scripted(...runs: EngineEvent[][]) {
  const seen: { req: GenerateRequest; signal: AbortSignal; finished: boolean }[] = [];
  const run = (req: GenerateRequest, signal: AbortSignal) => {
    const events = runs[seen.length] ?? [];
    const rec = { req, signal, finished: false };
    seen.push(rec);
    return (async function* () {
      try {
        for (const ev of events) yield ev;
      } finally {
        rec.finished = true;
      }
    })();
  };
  return { run, seen };
}

async function collect(it: AsyncIterable<EngineEvent>): Promise<EngineEvent[]> {
  const out: EngineEvent[] = [];
  for await (const ev of it) out.push(ev);
  return out;
}

describe("answered calls", () => {
  test("the last assistant turn's calls, once results follow them", () => {
    expect([...answeredCalls(HISTORY)]).toEqual(['get_weather({"city":"Paris"})']);
    expect(answeredCalls(HISTORY.slice(0, 3)).size).toBe(0); // no result yet
    expect(answeredCalls([...HISTORY, { role: "user", content: "And tomorrow?" }]).size).toBe(1);
    expect(answeredCalls([...HISTORY, { role: "assistant", content: "It is sunny." }]).size).toBe(0);
    expect(answeredCalls([{ role: "user", content: "hi" }]).size).toBe(0);
  });

  test("tool history as text: calls in the assistant turn, results as the user's, adjacent user turns joined", () => {
    const flat = toolHistoryAsText([...HISTORY, { role: "user", content: "Answer now." }]);
    expect(flat).toEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: "What's the weather in Paris?" },
      { role: "assistant", content: 'I called the tool get_weather with {"city":"Paris"}.' },
      { role: "user", content: "The tool get_weather returned:\n18°C and sunny\n\nAnswer now." },
    ]);
    expect(flat.some((m) => m.tool_calls || m.role === "tool")).toBe(false);
  });
});

describe("answerRepeatedCalls", () => {
  test("a first call repeating the answered one: the first run is ended, a second answers from the result", async () => {
    const f = scripted(
      [started(40), { type: "progress", processed: 40, total: 40 }, { type: "text", text: "\n" }, { type: "tool_call", name: "get_weather", arguments: { city: "Paris" } }, done(9, "tool_calls")],
      [started(30), { type: "progress", processed: 30, total: 30 }, { type: "text", text: "It is 18°C and sunny." }, done(8)],
    );
    const events = await collect(answerRepeatedCalls(request(), new AbortController().signal, f.run));
    expect(events).toEqual([
      started(40),
      { type: "progress", processed: 40, total: 40 },
      { type: "text", text: "It is 18°C and sunny." },
      { type: "done", finishReason: "stop", promptTokens: 40, completionTokens: 8, cachedTokens: 3, cacheCreatedTokens: 0 },
    ]);
    expect(f.seen.length).toBe(2);
    expect(f.seen[0]!.signal.aborted).toBe(true);
    expect(f.seen[0]!.finished).toBe(true);
    const second = f.seen[1]!.req;
    expect(second.tools).toBeUndefined();
    expect(second.cachePrefix).toBeUndefined();
    expect(second.messages.some((m) => m.role === "tool" || m.tool_calls)).toBe(false);
    expect(second.maxTokens).toBe(64);
  });

  test("key order does not hide the repeat", async () => {
    const messages: ChatMessage[] = [
      { role: "user", content: "q" },
      { role: "assistant", content: "", tool_calls: [{ ...CALL, function: { name: "f", arguments: { a: 1, b: 2 } } }] },
      { role: "tool", tool_call_id: "c1", content: "r" },
    ];
    const f = scripted([started(5), { type: "tool_call", name: "f", arguments: { b: 2, a: 1 } }, done(3, "tool_calls")], [started(4), { type: "text", text: "ok" }, done(1)]);
    const events = await collect(answerRepeatedCalls(request({ messages }), new AbortController().signal, f.run));
    expect(f.seen.length).toBe(2);
    expect(events.map((e) => e.type)).toEqual(["started", "text", "done"]);
  });

  test("a new call, text first, a forced choice or no results: the generation passes as it is", async () => {
    const newCall: EngineEvent[] = [started(40), { type: "tool_call", name: "get_weather", arguments: { city: "Rome" } }, done(9, "tool_calls")];
    const textFirst: EngineEvent[] = [started(40), { type: "text", text: "Again:" }, { type: "tool_call", name: "get_weather", arguments: { city: "Paris" } }, done(9, "tool_calls")];
    const cases: [GenerateRequest, EngineEvent[]][] = [
      [request(), newCall],
      [request(), textFirst],
      [request({ toolChoice: "required" }), textFirst.filter((e) => e.type !== "text")],
      [request({ toolChoice: { name: "get_weather" } }), textFirst.filter((e) => e.type !== "text")],
      [request({ messages: HISTORY.slice(0, 2) }), newCall],
    ];
    for (const [req, events] of cases) {
      const f = scripted(events);
      expect(await collect(answerRepeatedCalls(req, new AbortController().signal, f.run))).toEqual(events);
      expect(f.seen.length).toBe(1);
    }
  });

  test("held whitespace is released before the first visible event", async () => {
    const f = scripted([started(4), { type: "text", text: " " }, { type: "text", text: "Hi" }, done(2)]);
    const events = await collect(answerRepeatedCalls(request(), new AbortController().signal, f.run));
    expect(events).toEqual([started(4), { type: "text", text: " " }, { type: "text", text: "Hi" }, done(2)]);
  });

  test("a client that has left gets no second try", async () => {
    const ac = new AbortController();
    const f = scripted([started(4), { type: "tool_call", name: "get_weather", arguments: { city: "Paris" } }, done(2, "tool_calls")], [started(3), { type: "text", text: "x" }, done(1)]);
    const it = answerRepeatedCalls(request(), ac.signal, (r, s) => {
      ac.abort();
      return f.run(r, s);
    });
    const events = await collect(it);
    expect(events.map((e) => e.type)).toEqual(["started"]);
    expect(f.seen.length).toBe(1);
  });
});

describe("a repeat with keys the tool does not declare", () => {
  const tools = [{ type: "function" as const, function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];

  test("is still the answered call; a declared input that differs is a new call", async () => {
    for (const [args, repeat] of [
      [{ city: "Paris", weather: "sunny", temperature: 18 }, true],
      [{ city: "Rome", weather: "sunny" }, false],
    ] as const) {
      const f = scripted([started(9), { type: "tool_call", name: "get_weather", arguments: args }, done(5, "tool_calls")], [started(7), { type: "text", text: "Sunny." }, done(2)]);
      await collect(answerRepeatedCalls(request({ tools }), new AbortController().signal, f.run));
      expect(f.seen.length).toBe(repeat ? 2 : 1);
    }
  });

  test("a schema that allows other keys compares them too", () => {
    const open = [{ type: "function" as const, function: { name: "get_weather", parameters: { type: "object", properties: { city: {} }, additionalProperties: true } } }];
    const withExtra: ChatMessage[] = [HISTORY[1]!, { role: "assistant", content: "", tool_calls: [{ ...CALL, function: { name: "get_weather", arguments: { city: "Paris", x: 1 } } }] }, HISTORY[3]!];
    expect([...answeredCalls(withExtra, tools)]).toEqual(['get_weather({"city":"Paris"})']);
    expect([...answeredCalls(withExtra, open)]).toEqual(['get_weather({"city":"Paris","x":1})']);
  });
});
