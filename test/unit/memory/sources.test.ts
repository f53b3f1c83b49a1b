import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { darwinAvailableBytes, parseVmStat, parseVmStatistics64, pressureFromLevel } from "../../../src/memory/darwin-source";
import { createFileSource, parseByteCount } from "../../../src/memory/source";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("file:PATH source", () => {
  test("reads the available bytes as an integer, fresh on every read", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pensieve-file-"));
    dirs.push(dir);
    const path = join(dir, "avail");
    const src = createFileSource(path);
    writeFileSync(path, "4294967296\n");
    expect((await src.read()).availableBytes).toBe(4294967296);
    writeFileSync(path, "  1024 ");
    expect((await src.read()).availableBytes).toBe(1024);
    expect(src.injected).toBe(true);
  });

  test("a missing file or a non-integer rejects (the monitor keeps its last sample)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pensieve-file-"));
    dirs.push(dir);
    const path = join(dir, "avail");
    await expect(createFileSource(path).read()).rejects.toThrow();
    for (const bad of ["", "1.5", "-3", "12 GB", "abc"]) {
      writeFileSync(path, bad);
      await expect(createFileSource(path).read()).rejects.toThrow(/byte count/);
    }
  });

  test("parseByteCount refuses numbers beyond 2^53", () => {
    expect(() => parseByteCount("99999999999999999999", "x")).toThrow(/out of range/);
    expect(parseByteCount("0", "x")).toBe(0);
  });
});

describe("macOS figures (parsed here; read via bun:ffi on a Mac)", () => {
  /** A vm_statistics64 buffer with the given page counts at their kernel offsets. */
  function vmStats(c: { free: number; active: number; inactive: number; wire: number; speculative: number }) {
    const buf = new Uint8Array(152);
    const v = new DataView(buf.buffer);
    v.setUint32(0, c.free, true);
    v.setUint32(4, c.active, true);
    v.setUint32(8, c.inactive, true);
    v.setUint32(12, c.wire, true);
    v.setBigUint64(16, 123456789n, true); // zero_fill_count: must not leak into the counts
    v.setUint32(88, 777, true); // purgeable_count
    v.setUint32(92, c.speculative, true);
    return buf;
  }

  test("decodes vm_statistics64 at the kernel's offsets", () => {
    const counts = parseVmStatistics64(vmStats({ free: 1000, active: 2000, inactive: 3000, wire: 4000, speculative: 250 }));
    expect(counts).toEqual({ freeCount: 1000, activeCount: 2000, inactiveCount: 3000, wireCount: 4000, speculativeCount: 250 });
    expect(() => parseVmStatistics64(new Uint8Array(64))).toThrow(/too small/);
  });

  test("available = free + inactive + speculative as vm_stat prints them (kernel free_count includes speculative)", () => {
    const counts = { freeCount: 1000, activeCount: 0, inactiveCount: 3000, wireCount: 0, speculativeCount: 250 };
    // vm_stat: Pages free = 750, inactive = 3000, speculative = 250 -> 4000 pages.
    expect(darwinAvailableBytes(counts, 16384)).toBe(4000 * 16384);
  });

  test("parses vm_stat output (the spawning fallback)", () => {
    const out = `Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                               12000.
Pages active:                            300000.
Pages inactive:                          250000.
Pages speculative:                         3000.
Pages throttled:                              0.
Pages wired down:                        150000.
`;
    expect(parseVmStat(out)).toBe((12000 + 250000 + 3000) * 16384);
    expect(() => parseVmStat("Pages free: 1.")).toThrow(/page size/);
    expect(() => parseVmStat("(page size of 4096 bytes)\nPages free: 1.\n")).toThrow(/Pages inactive/);
  });

  test("memorystatus pressure levels: 1 normal, 2 warn, 4 critical", () => {
    expect(pressureFromLevel(1)).toBe("normal");
    expect(pressureFromLevel(0)).toBe("normal");
    expect(pressureFromLevel(2)).toBe("warn");
    expect(pressureFromLevel(4)).toBe("critical");
  });
});
