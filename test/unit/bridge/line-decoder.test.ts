import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { LineDecoder, type LineOverflow, LineTooLongError } from "../../../src/bridge/line-decoder";
import { engineDefaults } from "../../../src/config";

const enc = new TextEncoder();

function run(chunks: Uint8Array[], maxLineLength = engineDefaults.maxLineLength) {
  const lines: string[] = [];
  const overflows: LineOverflow[] = [];
  const d = new LineDecoder((l) => lines.push(l), { maxLineLength, onOverflow: (o) => overflows.push(o) });
  for (const c of chunks) d.push(c);
  d.flush();
  return { lines, overflows };
}

describe("LineDecoder", () => {
  const text = '{"text":"h\u00e9llo"}\n{"text":"\u{1F30D} \u4e16\u754c"}\r\n\n{"text":"\u00e0 bient\u00f4t"}\n';
  const bytes = enc.encode(text);
  const expected = ['{"text":"h\u00e9llo"}', '{"text":"\u{1F30D} \u4e16\u754c"}', "", '{"text":"\u00e0 bient\u00f4t"}'];

  test("one chunk", () => {
    expect(run([bytes]).lines).toEqual(expected);
  });

  test("every single split point, including inside multi-byte characters and CRLF", () => {
    for (let i = 0; i <= bytes.length; i++) {
      expect(run([bytes.subarray(0, i), bytes.subarray(i)]).lines).toEqual(expected);
    }
  });

  test("every pair of split points", () => {
    for (let i = 0; i <= bytes.length; i++) {
      for (let j = i; j <= bytes.length; j++) {
        const chunks = [bytes.subarray(0, i), bytes.subarray(i, j), bytes.subarray(j)];
        expect(run(chunks).lines).toEqual(expected);
      }
    }
  });

  test("one byte at a time", () => {
    const chunks = Array.from(bytes, (b) => Uint8Array.of(b));
    expect(run(chunks).lines).toEqual(expected);
  });

  test("random lines and random chunking round-trip", () => {
    const line = fc.string({ unit: "grapheme", maxLength: 30 }).map((s) => s.replace(/[\r\n]/g, ""));
    fc.assert(
      fc.property(fc.array(line, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (lines, cuts) => {
        const b = enc.encode(lines.map((l) => `${l}\n`).join(""));
        const points = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y);
        const chunks: Uint8Array[] = [];
        let prev = 0;
        for (const p of points) {
          chunks.push(b.subarray(prev, p));
          prev = p;
        }
        chunks.push(b.subarray(prev));
        expect(run(chunks).lines).toEqual(lines);
      }),
    );
  });

  test("flush emits a final line without newline, with CR stripped", () => {
    expect(run([enc.encode("a\nlast\r")]).lines).toEqual(["a", "last"]);
    expect(run([enc.encode("a\n")]).lines).toEqual(["a"]);
    expect(run([]).lines).toEqual([]);
  });

  test("a truncated multi-byte character at end of stream becomes U+FFFD", () => {
    const euro = enc.encode("\u20ac");
    expect(run([enc.encode("x"), euro.subarray(0, 2)]).lines).toEqual(["x\ufffd"]);
  });

  test("CR alone inside a line is kept; only a CR before LF is stripped", () => {
    expect(run([enc.encode("a\rb\r\n")]).lines).toEqual(["a\rb"]);
  });

  test("a line over the cap is reported once and skipped up to its newline", () => {
    const long = "x".repeat(50);
    const { lines, overflows } = run([enc.encode(`ok\n${long.slice(0, 20)}`), enc.encode(`${long.slice(20)}\nafter\n`)], 10);
    expect(lines).toEqual(["ok", "after"]);
    expect(overflows.length).toBe(1);
    expect(overflows[0]?.length).toBeGreaterThan(10);
    expect(overflows[0]?.head.startsWith("xxxxxxxxxx")).toBe(true);
  });

  test("a complete over-long line inside one chunk is reported, neighbours survive", () => {
    const { lines, overflows } = run([enc.encode(`a\n${"y".repeat(11)}\nb\n`)], 10);
    expect(lines).toEqual(["a", "b"]);
    expect(overflows.map((o) => o.length)).toEqual([11]);
  });

  test("a line exactly at the cap passes, also when its CRLF is split", () => {
    const ten = "z".repeat(10);
    expect(run([enc.encode(`${ten}\r`), enc.encode("\n")], 10).lines).toEqual([ten]);
  });

  test("memory stays bounded while skipping a huge line", () => {
    const lines: string[] = [];
    let overflows = 0;
    const d = new LineDecoder((l) => lines.push(l), { maxLineLength: 100, onOverflow: () => overflows++ });
    const chunk = enc.encode("q".repeat(1000));
    for (let i = 0; i < 1000; i++) d.push(chunk);
    d.push(enc.encode("\nnext\n"));
    d.flush();
    expect(overflows).toBe(1);
    expect(lines).toEqual(["next"]);
  });

  test("without onOverflow, an over-long line throws LineTooLongError", () => {
    const d = new LineDecoder(() => {}, { maxLineLength: 4 });
    expect(() => d.push(enc.encode("abcdefgh"))).toThrow(LineTooLongError);
  });
});

describe("LineDecoder with lineEnds: any", () => {
  const lines = (...chunks: string[]) => {
    const out: string[] = [];
    const d = new LineDecoder((l) => out.push(l), { maxLineLength: engineDefaults.maxLineLength, lineEnds: "any" });
    for (const c of chunks) d.push(new TextEncoder().encode(c));
    d.flush();
    return out;
  };

  test("LF, CRLF and a lone CR each end a line, also when CR and LF are split across chunks", () => {
    expect(lines("a\nb\r\nc\rd")).toEqual(["a", "b", "c", "d"]);
    expect(lines("a\r", "\nb\r", "\r\n")).toEqual(["a", "b", ""]);
    expect(lines("a\r", "", "\nb")).toEqual(["a", "b"]);
    expect(lines("\r\r")).toEqual(["", ""]);
  });
});
