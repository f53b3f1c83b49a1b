import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readTar } from "../../../src/bridge/ustar";
import { makeTar } from "./npm-fixture";

const work = mkdtempSync(join(tmpdir(), "pensieve-ustar-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const text = (d: Uint8Array) => new TextDecoder().decode(d);

describe("readTar", () => {
  test("lists regular files with their contents and modes, skipping directories and links", () => {
    const tar = makeTar([
      { path: "package/", type: "5", mode: 0o755 },
      { path: "package/a.txt", data: "alpha" },
      { path: "package/bin/run", data: "x".repeat(1500), mode: 0o755 },
      { path: "package/link", type: "2" },
      { path: "package/empty", data: "" },
    ]);
    const files = readTar(tar);
    expect(files.map((f) => f.path)).toEqual(["package/a.txt", "package/bin/run", "package/empty"]);
    expect(text(files[0]!.data)).toBe("alpha");
    expect(files[1]!.data.length).toBe(1500);
    expect(files[1]!.mode).toBe(0o755);
    expect(files[2]!.data.length).toBe(0);
  });

  test("takes a long path from its pax header", () => {
    const long = `package/${"d".repeat(120)}/libllama.so`;
    const files = readTar(makeTar([{ path: long, data: "L" }, { path: "package/short", data: "S" }]));
    expect(files.map((f) => f.path)).toEqual([long, "package/short"]);
  });

  const src = join(work, "src");
  const deep = join(src, "package", "bins", "p".repeat(60), "q".repeat(60));
  mkdirSync(deep, { recursive: true });
  writeFileSync(join(deep, "libllama.so"), "real tar");
  // The system tar's default (GNU: 'L' long names), ustar's name prefix, and pax headers.
  test.each([[[]], [["--format=ustar"]], [["--format=pax"]]])("reads what the system tar writes with %p, long names included", (flags) => {
    const out = join(work, `t${flags.join("")}.tar`);
    const r = Bun.spawnSync(["tar", ...flags, "-cf", out, "-C", src, "package"]);
    expect(r.exitCode).toBe(0);
    const files = readTar(new Uint8Array(readFileSync(out)));
    const lib = files.find((f) => f.path.endsWith("/libllama.so"));
    expect(lib?.path).toBe(`package/bins/${"p".repeat(60)}/${"q".repeat(60)}/libllama.so`);
    expect(text(lib!.data)).toBe("real tar");
  });

  test("refuses a corrupt header and a truncated entry", () => {
    const tar = makeTar([{ path: "package/a", data: "abc" }]);
    const bad = tar.slice();
    bad[0] = "X".charCodeAt(0);
    expect(() => readTar(bad)).toThrow(/checksum/);
    const big = makeTar([{ path: "package/a", data: "y".repeat(2000) }]);
    expect(() => readTar(big.subarray(0, 1024))).toThrow(/truncated/);
  });

  test("an empty archive has no files", () => {
    expect(readTar(new Uint8Array(1024))).toEqual([]);
    expect(readTar(new Uint8Array(0))).toEqual([]);
  });
});
