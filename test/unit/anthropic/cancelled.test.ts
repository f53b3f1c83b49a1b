/**
 * A cancelled generation is never passed off as complete: no end_turn/max_tokens, no
 * message_stop. Streams end with `event: error` overloaded_error; JSON answers get a 503.
 */
import { describe, expect, test } from "bun:test";
import { aggregate, aggregateEvents } from "../../../src/anthropic/aggregate";
import { HttpError, mapError } from "../../../src/anthropic/errors";
import { CANCELLED_MESSAGE, StreamConverter, stopReasonOf, type SseEvent } from "../../../src/anthropic/stream";
import type { EngineEvent, FinishReason } from "../../../src/engine/types";
import { ChunkAssembler } from "../../../src/upstream/stream";
import { postMessages, readSse, simpleBody, makeApp } from "../app/harness";
import { httpDefaults } from "../../../src/config";

const opts = { messageId: "msg_1", model: "claude-x", requestId: "req_c1", cancelledRetryAfterSeconds: httpDefaults.cancelledRetryAfterSeconds };
const started: EngineEvent = { type: "started", promptTokens: 10, cachedTokens: 0 };
const done = (finishReason: FinishReason, completionTokens = 3): EngineEvent => ({
  type: "done",
  finishReason,
  promptTokens: 10,
  completionTokens,
  cachedTokens: 0,
});
const partial: EngineEvent[] = [started, { type: "text", text: "The first " }, { type: "text", text: "part" }];

async function* from(list: EngineEvent[]) {
  for (const e of list) yield e;
}

function convert(events: EngineEvent[]): { out: SseEvent[]; conv: StreamConverter } {
  const conv = new StreamConverter(opts);
  const out = events.flatMap((e) => conv.push(e));
  return { out, conv };
}

describe("stopReasonOf", () => {
  test("cancelled has no stop reason, with or without a tool call", () => {
    expect(stopReasonOf("cancelled", false)).toBeNull();
    expect(stopReasonOf("cancelled", true)).toBeNull();
  });

  test("finished generations keep theirs", () => {
    expect(stopReasonOf("stop", false)).toBe("end_turn");
    expect(stopReasonOf("length", false)).toBe("max_tokens");
  });
});

describe("StreamConverter: done{cancelled}", () => {
  test("ends with event: error overloaded_error, never message_delta or message_stop", () => {
    const { out, conv } = convert([...partial, done("cancelled")]);
    const names = out.map((e) => e.event);
    expect(names).not.toContain("message_stop");
    expect(names).not.toContain("message_delta");
    expect(out.at(-1)).toEqual({
      event: "error",
      data: { type: "error", error: { type: "overloaded_error", message: CANCELLED_MESSAGE }, request_id: "req_c1" },
    });
    expect(conv.isFinished).toBe(true);
    expect(conv.isCancelled).toBe(true);
  });

  test("after a tool call too; later events and pings are dropped", () => {
    const { out, conv } = convert([started, { type: "tool_call", name: "Read", arguments: {} }, done("cancelled")]);
    expect(out.at(-1)?.event).toBe("error");
    expect(conv.push({ type: "text", text: "late" })).toEqual([]);
    expect(conv.ping()).toEqual([]);
  });

  test("a finished generation is not cancelled", () => {
    const { out, conv } = convert([...partial, done("length")]);
    expect(out.at(-1)?.event).toBe("message_stop");
    expect(conv.isCancelled).toBe(false);
  });
});

describe("aggregate: done{cancelled}", () => {
  test("aggregate rejects with a retryable 503 overloaded_error", async () => {
    const err = await aggregate(from([...partial, done("cancelled")]), opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HttpError);
    const mapped = mapError(err, "req_c1");
    expect(mapped.status).toBe(503);
    expect(mapped.body.error).toEqual({ type: "overloaded_error", message: CANCELLED_MESSAGE });
    expect(mapped.headers["x-should-retry"]).toBe("true");
    expect(Number(mapped.headers["retry-after"])).toBeGreaterThan(0);
  });

  test("aggregateEvents throws too", () => {
    expect(() => aggregateEvents([...partial, done("cancelled")], opts)).toThrow(CANCELLED_MESSAGE);
    expect(aggregateEvents([...partial, done("stop")], opts).stop_reason).toBe("end_turn");
  });
});

describe("the routes: a generation the engine cancels", () => {
  const cancelledScript = [...partial, done("cancelled")];

  test("a stream ends with event: error overloaded_error", async () => {
    const h = makeApp({ engine: { script: cancelledScript } });
    const res = await postMessages(h, simpleBody({ stream: true }));
    expect(res.status).toBe(200);
    const events = await readSse(res);
    expect(events.map((e) => e.event)).not.toContain("message_stop");
    const last = events.at(-1)!;
    expect(last.event).toBe("error");
    expect((last.data as unknown as { error: { type: string } }).error.type).toBe("overloaded_error");
  });

  test("cancelled before the first byte: a 503 JSON, not a stream", async () => {
    const h = makeApp({ engine: { script: [done("cancelled", 0)] } });
    const res = await postMessages(h, simpleBody({ stream: true }));
    expect(res.status).toBe(503);
    expect(res.headers.get("x-should-retry")).toBe("true");
    expect(((await res.json()) as { error: { type: string } }).error.type).toBe("overloaded_error");
  });

  test("JSON gets a 503 overloaded_error with retry-after, not a 200 fragment", async () => {
    const h = makeApp({ engine: { script: cancelledScript } });
    const res = await postMessages(h, simpleBody());
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toMatch(/^\d+$/);
    const body = (await res.json()) as { type: string; error: { type: string; message: string } };
    expect(body.error).toEqual({ type: "overloaded_error", message: CANCELLED_MESSAGE });
  });
});

describe("upstream: a request the upstream aborted", () => {
  test.each(["abort", "cancelled", "canceled"])("finish_reason %s -> done{cancelled}", (reason) => {
    const asm = new ChunkAssembler();
    const chunk = { id: "c", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: "par" }, finish_reason: reason }] };
    asm.push({ kind: "event", event: "message", data: JSON.stringify(chunk) });
    expect(asm.finishEvents().at(-1)).toMatchObject({ type: "done", finishReason: "cancelled" });
  });

  test("a plain stop stays a stop", () => {
    const asm = new ChunkAssembler();
    const chunk = { choices: [{ index: 0, delta: { content: "x" }, finish_reason: "stop" }] };
    asm.push({ kind: "event", event: "message", data: JSON.stringify(chunk) });
    expect(asm.finishEvents().at(-1)).toMatchObject({ type: "done", finishReason: "stop" });
  });
});
