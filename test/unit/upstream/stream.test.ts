/** Recorded and hand-written OpenAI streams, replayed through OpenAIUpstreamEngine.generate. */
import { describe, expect, test } from "bun:test";
import type { EngineEvent, GenerateRequest } from "../../../src/engine/types";
import { UpstreamServerError } from "../../../src/upstream/errors";
import { OpenAIUpstreamEngine } from "../../../src/upstream/openai-engine";
import { ChunkAssembler, parseArguments } from "../../../src/upstream/stream";
import { collect, crlf, fakeUpstream, fixture, json, split, streamResponse } from "./fake-upstream";
import { serveDefaults } from "../../../src/config";
import { upstreamTuning } from "../../../src/upstream/index";

const req = (over: Partial<GenerateRequest> = {}): GenerateRequest => ({
  requestId: "req_1",
  messages: [{ role: "user", content: "hi" }],
  maxTokens: 64,
  ...over,
});

/** Replay `bytes` chunked by `sizes` and return the engine's events. */
async function replay(bytes: Uint8Array, sizes: number[], over: Partial<GenerateRequest> = {}) {
  const up = fakeUpstream((r, signal) =>
    r.path === "/v1/models" ? json({ object: "list", data: [{ id: "m", object: "model" }] }) : streamResponse(split(bytes, sizes), signal),
  );
  const engine = new OpenAIUpstreamEngine({ ...upstreamTuning(serveDefaults()), baseUrl: "http://up:8000/v1", model: "m", fetch: up.fetch, reprobeIntervalMs: 0 });
  return collect(engine.generate(req(over)));
}

const STARTED: EngineEvent = { type: "started", promptTokens: 0, cachedTokens: 0 };
const SIZES = [[1 << 20], [1], [7, 3, 50], [2, 128, 5, 1]];

const cases: { file: string; over?: Partial<GenerateRequest>; events: EngineEvent[] }[] = [
  {
    file: "vllm-text.sse",
    events: [
      STARTED,
      { type: "text", text: "Bonjour" },
      { type: "text", text: ", café" },
      { type: "text", text: " ☕🙂" },
      { type: "text", text: "!" },
      { type: "done", finishReason: "stop", promptTokens: 31, completionTokens: 6, cachedTokens: 16 },
    ],
  },
  {
    file: "vllm-tool-calls-parallel.sse",
    events: [
      STARTED,
      { type: "tool_call", name: "get_weather", arguments: { city: "Paris", unit: "celsius" } },
      { type: "tool_call", name: "get_time", arguments: { timezone: "Europe/Paris", format: { hours: 24 } } },
      { type: "done", finishReason: "tool_calls", promptTokens: 412, completionTokens: 56, cachedTokens: 0 },
    ],
  },
  {
    file: "vllm-reasoning.sse",
    events: [
      STARTED,
      { type: "thinking", text: "The user" },
      { type: "thinking", text: " wants 2+2." },
      { type: "thinking", text: "\n" },
      { type: "text", text: "\n\n" },
      { type: "text", text: "4" },
      { type: "done", finishReason: "stop", promptTokens: 14, completionTokens: 12, cachedTokens: 0 },
    ],
  },
  {
    file: "vllm-stop-sequence.sse",
    over: { stop: ["</answer>"] },
    events: [
      STARTED,
      { type: "text", text: "42" },
      { type: "done", finishReason: "stop_sequence", stopSequence: "</answer>", promptTokens: 20, completionTokens: 3, cachedTokens: 0 },
    ],
  },
  {
    file: "invalid-tool-args-length.sse",
    events: [
      STARTED,
      { type: "text", text: '[invalid tool call Write: {"file_path": "/tmp/a.txt", "content": "hel]' },
      { type: "done", finishReason: "length", promptTokens: 300, completionTokens: 16, cachedTokens: 0 },
    ],
  },
  {
    file: "llamacpp-text-then-tool-call.sse",
    events: [
      STARTED,
      { type: "text", text: "Let me read" },
      { type: "text", text: " that file." },
      { type: "tool_call", name: "Read", arguments: { file_path: "/src/main.ts" } },
      { type: "done", finishReason: "tool_calls", promptTokens: 1208, completionTokens: 27, cachedTokens: 1152 },
    ],
  },
  {
    file: "ollama-tool-call.sse",
    events: [
      STARTED,
      { type: "tool_call", name: "get_weather", arguments: { city: "Toronto" } },
      { type: "tool_call", name: "get_time", arguments: { timezone: "America/Toronto" } },
      { type: "done", finishReason: "tool_calls", promptTokens: 188, completionTokens: 38, cachedTokens: 0 },
    ],
  },
  {
    file: "mlx-tool-call.sse",
    events: [
      STARTED,
      { type: "progress", processed: 512, total: 1650 },
      { type: "progress", processed: 1024, total: 1650 },
      { type: "progress", processed: 1536, total: 1650 },
      { type: "progress", processed: 1650, total: 1650 },
      { type: "thinking", text: "I should check the weather." },
      { type: "text", text: "\n\n" },
      { type: "tool_call", name: "get_weather", arguments: { city: "Paris" } },
      { type: "done", finishReason: "tool_calls", promptTokens: 1650, completionTokens: 31, cachedTokens: 1400 },
    ],
  },
  {
    file: "mlx-text-length.sse",
    events: [
      STARTED,
      { type: "progress", processed: 1, total: 1 },
      ...Array.from({ length: 8 }, (): EngineEvent => ({ type: "text", text: "\n" })),
      { type: "done", finishReason: "length", promptTokens: 23, completionTokens: 8, cachedTokens: 22 },
    ],
  },
  {
    file: "mlx-tools-history.sse",
    events: [
      STARTED,
      { type: "progress", processed: 240, total: 241 },
      { type: "progress", processed: 241, total: 241 },
      ...Array.from({ length: 6 }, (): EngineEvent => ({ type: "text", text: "\n" })),
      { type: "done", finishReason: "length", promptTokens: 246, completionTokens: 6, cachedTokens: 5 },
    ],
  },
  {
    file: "openai-text-usage-null.sse",
    events: [
      STARTED,
      { type: "text", text: "Hi" },
      { type: "text", text: " there" },
      { type: "done", finishReason: "stop", promptTokens: 9, completionTokens: 2, cachedTokens: 0 },
    ],
  },
];

describe("recorded streams -> EngineEvents", () => {
  for (const c of cases) {
    test(`${c.file}: same events in any chunking, LF or CRLF`, async () => {
      for (const bytes of [fixture(c.file), crlf(fixture(c.file))]) {
        for (const sizes of SIZES) {
          const { events, error } = await replay(bytes, sizes, c.over);
          expect(error).toBeUndefined();
          expect(events).toEqual(c.events);
        }
      }
    });
  }

  test("without the stop sequence in the request, vLLM's stop_reason is a plain stop", async () => {
    const { events } = await replay(fixture("vllm-stop-sequence.sse"), [1 << 20]);
    expect(events.at(-1)).toMatchObject({ type: "done", finishReason: "stop" });
    expect(events.at(-1)).not.toHaveProperty("stopSequence");
  });

  test("an error sent inside the stream ends it with a typed error after the text so far", async () => {
    const { events, error } = await replay(fixture("vllm-error-midstream.sse"), [9]);
    expect(events).toEqual([STARTED, { type: "text", text: "Partial" }]);
    expect(error).toBeInstanceOf(UpstreamServerError);
    expect((error as Error).message).toContain("CUDA error: an illegal memory access");
  });
});

describe("ChunkAssembler", () => {
  const item = (data: unknown) => ({ kind: "event" as const, event: "message", data: JSON.stringify(data) });

  test("SGLang's matched_stop names the stop sequence; missing usage counts content chunks", () => {
    const a = new ChunkAssembler(["\n\nUser:"]);
    a.push(item({ choices: [{ index: 0, delta: { content: "a" } }] }));
    a.push(item({ choices: [{ index: 0, delta: { content: "b" } }] }));
    a.push(item({ choices: [{ index: 0, delta: {}, finish_reason: "stop", matched_stop: "\n\nUser:" }] }));
    expect(a.finishEvents()).toEqual([
      { type: "done", finishReason: "stop_sequence", stopSequence: "\n\nUser:", promptTokens: 0, completionTokens: 2, cachedTokens: 0 },
    ]);
  });

  test("choices other than index 0, empty data and stray non-JSON lines are ignored", () => {
    const a = new ChunkAssembler();
    expect(a.push(item({ choices: [{ index: 1, delta: { content: "x" } }] }))).toEqual([]);
    expect(a.push({ kind: "event", event: "message", data: "" })).toEqual([]);
    expect(a.push({ kind: "event", event: "message", data: "not json" })).toEqual([]);
    expect(a.push({ kind: "comment", text: "ping" })).toEqual([]);
  });

  test("a tool call without an id is still a call (ids are minted by the API layer); an unnamed call becomes text", () => {
    const a = new ChunkAssembler([]);
    a.push(item({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { name: "ls", arguments: "{}" } }] } }] }));
    a.push(item({ choices: [{ index: 0, delta: { tool_calls: [{ index: 1, function: { arguments: '{"a":1}' } }] } }] }));
    a.push(item({ choices: [{ index: 0, delta: {}, finish_reason: "tool_calls" }] }));
    expect(a.finishEvents()).toEqual([
      { type: "tool_call", name: "ls", arguments: {} },
      { type: "text", text: '[invalid tool call (unnamed): {"a":1}]' },
      { type: "done", finishReason: "tool_calls", promptTokens: 0, completionTokens: 0, cachedTokens: 0 },
    ]);
  });

  test("finish_reason tool_calls with only invalid calls is reported as a plain stop", () => {
    const a = new ChunkAssembler();
    a.push(item({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, id: "c1", function: { name: "x", arguments: "{oops" } }] } }] }));
    a.push(item({ choices: [{ index: 0, delta: {}, finish_reason: "tool_calls" }] }));
    expect(a.finishEvents().at(-1)).toMatchObject({ finishReason: "stop" });
  });

  test("llama-server prompt_progress becomes progress events", () => {
    const a = new ChunkAssembler();
    expect(a.push(item({ choices: [], prompt_progress: { total: 100, processed: 40, cache: 10 } }))).toEqual([
      { type: "progress", processed: 40, total: 100 },
    ]);
  });

  test("parseArguments: empty is {}, double-encoded JSON is unwrapped, arrays and junk are rejected", () => {
    expect(parseArguments("")).toEqual({});
    expect(parseArguments('"{\\"a\\":1}"')).toEqual({ a: 1 });
    expect(parseArguments("[1]")).toBeNull();
    expect(parseArguments("{")).toBeNull();
    expect(parseArguments("null")).toBeNull();
  });
});
