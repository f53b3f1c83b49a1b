import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { SseDecoder, type SseItem } from "../../../src/upstream/sse";
import { crlf, fixture, split } from "./fake-upstream";
import { upstreamDefaults } from "../../../src/config";

const enc = new TextEncoder();

function decodeAll(pieces: Uint8Array[]): SseItem[] {
  const d = new SseDecoder({ maxLineLength: upstreamDefaults.maxLineLength });
  const out: SseItem[] = [];
  for (const p of pieces) out.push(...d.push(p));
  out.push(...d.end());
  return out;
}

const decodeText = (...pieces: string[]) => decodeAll(pieces.map((p) => enc.encode(p)));

describe("SseDecoder", () => {
  test("dispatches data events on blank lines and keeps comments", () => {
    expect(decodeText(': keepalive 1/2\n\ndata: {"a":1}\n\ndata: [DONE]\n\n')).toEqual([
      { kind: "comment", text: "keepalive 1/2" },
      { kind: "event", event: "message", data: '{"a":1}' },
      { kind: "event", event: "message", data: "[DONE]" },
    ]);
  });

  test("joins multi-line data and reads the event field", () => {
    expect(decodeText("event: error\ndata: line1\ndata: line2\n\n")).toEqual([
      { kind: "event", event: "error", data: "line1\nline2" },
    ]);
  });

  test("accepts CRLF, lone CR, and a CR/LF pair split across chunks", () => {
    const expected: SseItem[] = [
      { kind: "event", event: "message", data: "a" },
      { kind: "event", event: "message", data: "b" },
    ];
    expect(decodeText("data: a\r\n\r\ndata: b\r\n\r\n")).toEqual(expected);
    expect(decodeText("data: a\r\rdata: b\r\r")).toEqual(expected);
    expect(decodeText("data: a\r", "\n\r", "\ndata: b\r", "\n", "\r\n")).toEqual(expected);
  });

  test("a field without a space after the colon, and a bare `error:` line", () => {
    expect(decodeText('data:{"x":1}\n\nerror: {"message":"boom"}\n\n')).toEqual([
      { kind: "event", event: "message", data: '{"x":1}' },
      { kind: "event", event: "error", data: '{"message":"boom"}' },
    ]);
  });

  test("flushes an unterminated last event at end of stream", () => {
    expect(decodeText("data: [DONE]")).toEqual([{ kind: "event", event: "message", data: "[DONE]" }]);
  });

  test("UTF-8 split inside a character survives byte-by-byte delivery", () => {
    const bytes = enc.encode('data: {"t":"café ☕🙂"}\n\n');
    expect(decodeAll(split(bytes, [1]))).toEqual([{ kind: "event", event: "message", data: '{"t":"café ☕🙂"}' }]);
  });

  test("any chunking of a recorded stream decodes to the same items (LF and CRLF)", () => {
    for (const bytes of [fixture("vllm-tool-calls-parallel.sse"), crlf(fixture("mlx-text-length.sse"))]) {
      const whole = decodeAll([bytes]);
      expect(whole.length).toBeGreaterThan(3);
      fc.assert(
        fc.property(fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 }), (sizes) => {
          expect(decodeAll(split(bytes, sizes))).toEqual(whole);
        }),
        { numRuns: 60 },
      );
    }
  });
});

describe("SseDecoder line cap", () => {
  test("an over-long line is dropped and reported; the events around it survive", () => {
    const seen: number[] = [];
    const d = new SseDecoder({ maxLineLength: 32, onOverflow: (o) => seen.push(o.length) });
    const items = [
      ...d.push(enc.encode(`data: a\n\ndata: ${"x".repeat(100)}\n\n`)),
      ...d.push(enc.encode("data: b\n\n")),
      ...d.end(),
    ];
    expect(items).toEqual([
      { kind: "event", event: "message", data: "a" },
      { kind: "event", event: "message", data: "b" },
    ]);
    expect(seen).toHaveLength(1);
  });

  test("without onOverflow an over-long line throws", () => {
    const d = new SseDecoder({ maxLineLength: 8 });
    expect(() => d.push(enc.encode(`data: ${"y".repeat(20)}\n`))).toThrow(/longer than the limit/);
  });
});
