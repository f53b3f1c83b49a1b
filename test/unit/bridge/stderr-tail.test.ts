import { describe, expect, test } from "bun:test";
import { StderrTail } from "../../../src/bridge/stderr-tail";
import { engineDefaults } from "../../../src/config";

// The tail the engine keeps by default.
const TAIL = { maxLines: engineDefaults.stderrTailLines, maxLineLength: engineDefaults.stderrLineLength };

function streamOf(...parts: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(c) {
      for (const p of parts) c.enqueue(enc.encode(p));
      c.close();
    },
  });
}

describe("StderrTail", () => {
  test("keeps the last N lines, oldest first", () => {
    const t = new StderrTail({ ...TAIL, maxLines: 3 });
    expect(t.lines()).toEqual([]);
    t.push("a");
    t.push("b");
    expect(t.lines()).toEqual(["a", "b"]);
    for (const l of ["c", "d", "e"]) t.push(l);
    expect(t.lines()).toEqual(["c", "d", "e"]);
    t.clear();
    expect(t.lines()).toEqual([]);
  });

  test("cuts long lines", () => {
    const t = new StderrTail({ maxLines: 2, maxLineLength: 5 });
    t.push("0123456789");
    expect(t.lines()).toEqual(["01234…"]);
  });

  test("forwards lines with a prefix when configured", () => {
    const seen: string[] = [];
    const t = new StderrTail({ ...TAIL, forward: (s) => seen.push(s) });
    t.push("loading");
    t.push("[worker] tagged already");
    expect(seen).toEqual(["[worker] loading\n", "[worker] tagged already\n"]);
    const quiet = new StderrTail(TAIL);
    quiet.push("x");
    expect(quiet.lines()).toEqual(["x"]);
  });

  test("drains a stream split mid-line and mid-character, keeping an unterminated last line", async () => {
    const t = new StderrTail({ ...TAIL, maxLines: 10 });
    const bytes = new TextEncoder().encode("Trace\u00e9\n  File x\r\nboom");
    const s = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes.subarray(0, 6)); // splits the two-byte é
        c.enqueue(bytes.subarray(6));
        c.close();
      },
    });
    await t.drain(s);
    expect(t.lines()).toEqual(["Trace\u00e9", "  File x", "boom"]);
  });

  test("drain never rejects on an erroring stream", async () => {
    const t = new StderrTail(TAIL);
    let pulls = 0;
    const s = new ReadableStream<Uint8Array>({
      pull(c) {
        if (pulls++ === 0) c.enqueue(new TextEncoder().encode("partial\n"));
        else c.error(new Error("pipe broke"));
      },
    });
    await t.drain(s);
    expect(t.lines()).toEqual(["partial"]);
  });

  test("drain after pushes appends to the same ring", async () => {
    const t = new StderrTail({ ...TAIL, maxLines: 2 });
    t.push("first");
    await t.drain(streamOf("second\n", "third\n"));
    expect(t.lines()).toEqual(["second", "third"]);
  });
});
