/**
 * The release binaries: each file's format and architecture, read from its headers
 * (Mach-O arm64 with a valid code signature, ELF x86-64, ELF aarch64), SHA256SUMS,
 * the embedded bridge, and the compiled materializeBridge().
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { listBridgeFiles } from "../../src/assets/bridge-tree";

const REPO = resolve(import.meta.dir, "..", "..");
const DIST = join(REPO, "dist");
const BRIDGE = join(REPO, "python_bridge");
const RELEASE = {
  darwinArm64: "pensieve-darwin-arm64",
  linuxX64: "pensieve-linux-x64",
  linuxArm64: "pensieve-linux-arm64",
} as const;
const RELEASE_FILES = Object.values(RELEASE);

// ---- Mach-O (all little-endian header fields; the code signature blobs are big-endian) ----
const MH_MAGIC_64 = 0xfeedfacf;
const CPU_TYPE_ARM64 = 0x0100000c; // CPU_TYPE_ARM (12) | CPU_ARCH_ABI64
const MH_EXECUTE = 2;
const LC_CODE_SIGNATURE = 0x1d;
const CSMAGIC_EMBEDDED_SIGNATURE = 0xfade0cc0;
const CSMAGIC_CODEDIRECTORY = 0xfade0c02;
const CSSLOT_CODEDIRECTORY = 0;
const CS_HASHTYPE_SHA256 = 2;

interface MachO {
  magic: number;
  cputype: number;
  filetype: number;
  loadCommands: number[];
  codeSignature?: { dataoff: number; datasize: number };
}

function parseMachO(buf: Buffer): MachO {
  const magic = buf.readUInt32LE(0);
  const cputype = buf.readUInt32LE(4);
  const filetype = buf.readUInt32LE(12);
  const ncmds = buf.readUInt32LE(16);
  const loadCommands: number[] = [];
  let codeSignature: MachO["codeSignature"];
  let off = 32; // sizeof(mach_header_64)
  for (let i = 0; i < ncmds; i++) {
    const cmd = buf.readUInt32LE(off);
    const size = buf.readUInt32LE(off + 4);
    loadCommands.push(cmd);
    if (cmd === LC_CODE_SIGNATURE) codeSignature = { dataoff: buf.readUInt32LE(off + 8), datasize: buf.readUInt32LE(off + 12) };
    off += size;
  }
  return { magic, cputype, filetype, loadCommands, codeSignature };
}

/**
 * Checks the embedded signature's CodeDirectory against the file: every page hash must
 * match, and the signed range must reach the signature itself (so the appended app is covered).
 */
function verifyCodeDirectory(buf: Buffer, sig: { dataoff: number; datasize: number }) {
  const blob = buf.subarray(sig.dataoff, sig.dataoff + sig.datasize);
  expect(blob.readUInt32BE(0)).toBe(CSMAGIC_EMBEDDED_SIGNATURE);
  const count = blob.readUInt32BE(8);
  let cdOffset: number | undefined;
  for (let i = 0; i < count; i++) {
    if (blob.readUInt32BE(12 + i * 8) === CSSLOT_CODEDIRECTORY) cdOffset = blob.readUInt32BE(16 + i * 8);
  }
  expect(cdOffset).toBeDefined();
  const cd = blob.subarray(cdOffset!);
  expect(cd.readUInt32BE(0)).toBe(CSMAGIC_CODEDIRECTORY);
  const hashOffset = cd.readUInt32BE(16);
  const nCodeSlots = cd.readUInt32BE(28);
  const codeLimit = cd.readUInt32BE(32);
  const hashSize = cd.readUInt8(36);
  const hashType = cd.readUInt8(37);
  const pageSize = 2 ** cd.readUInt8(39);
  expect(hashType).toBe(CS_HASHTYPE_SHA256);
  expect(hashSize).toBe(32);
  expect(codeLimit).toBe(sig.dataoff);
  expect(nCodeSlots).toBe(Math.ceil(codeLimit / pageSize));
  let mismatches = 0;
  for (let i = 0; i < nCodeSlots; i++) {
    const page = buf.subarray(i * pageSize, Math.min((i + 1) * pageSize, codeLimit));
    const want = cd.subarray(hashOffset + i * hashSize, hashOffset + (i + 1) * hashSize);
    if (!createHash("sha256").update(page).digest().equals(want)) mismatches++;
  }
  expect(mismatches).toBe(0);
}

// ---- ELF ----
const EM_X86_64 = 62;
const EM_AARCH64 = 183;

function parseElf(buf: Buffer) {
  return {
    magic: buf.subarray(0, 4).toString("latin1"),
    elfClass: buf[4], // 2 = 64-bit
    data: buf[5], // 1 = little-endian
    type: buf.readUInt16LE(16), // 2 = EXEC, 3 = DYN
    machine: buf.readUInt16LE(18),
  };
}

// ---- building ----
function newestMtime(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const entry of new Bun.Glob("**/*").scanSync({ cwd: path, onlyFiles: true, dot: false })) {
    newest = Math.max(newest, statSync(join(path, entry)).mtimeMs);
  }
  return newest;
}

/** Release files present and newer than every input; otherwise `bun run release` is due. */
function releaseIsFresh(): boolean {
  const outputs = [...RELEASE_FILES, "SHA256SUMS"].map((f) => join(DIST, f));
  if (!outputs.every(existsSync)) return false;
  const oldestOutput = Math.min(...outputs.map((f) => statSync(f).mtimeMs));
  const inputs = ["src", "python_bridge", "scripts/build.ts", "package.json", "bun.lock"].map((p) => join(REPO, p));
  return Math.max(...inputs.map(newestMtime)) < oldestOutput;
}

async function run(cmd: string[], cwd: string) {
  const proc = Bun.spawn(cmd, { cwd, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [code, stdout, stderr] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  return { code, stdout, stderr };
}

const binaries = new Map<string, Buffer>();
function binary(file: string): Buffer {
  let buf = binaries.get(file);
  if (!buf) binaries.set(file, (buf = readFileSync(join(DIST, file))));
  return buf;
}

describe("release binaries", () => {
  beforeAll(async () => {
    if (releaseIsFresh()) return;
    // Cross-compiling fetches each target's Bun runtime from the npm registry on first use.
    const r = await run([process.execPath, "run", "release"], REPO);
    if (r.code !== 0) throw new Error(`bun run release failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  }, 600_000);

  test("pensieve-darwin-arm64 is a Mach-O 64-bit arm64 executable", () => {
    const m = parseMachO(binary(RELEASE.darwinArm64));
    expect(m.magic).toBe(MH_MAGIC_64);
    expect(m.cputype).toBe(CPU_TYPE_ARM64);
    expect(m.filetype).toBe(MH_EXECUTE);
  });

  test("pensieve-darwin-arm64 carries a code signature that covers the whole binary", () => {
    const buf = binary(RELEASE.darwinArm64);
    const m = parseMachO(buf);
    expect(m.loadCommands).toContain(LC_CODE_SIGNATURE);
    expect(m.codeSignature).toBeDefined();
    // The signature is the last thing in the file (Apple's layout for __LINKEDIT).
    expect(m.codeSignature!.dataoff + m.codeSignature!.datasize).toBeLessThanOrEqual(buf.length);
    verifyCodeDirectory(buf, m.codeSignature!);
  });

  test("pensieve-linux-x64 is an ELF 64-bit x86-64 executable", () => {
    const e = parseElf(binary(RELEASE.linuxX64));
    expect(e).toMatchObject({ magic: "\x7fELF", elfClass: 2, data: 1, machine: EM_X86_64 });
    expect([2, 3]).toContain(e.type);
  });

  test("pensieve-linux-arm64 is an ELF 64-bit aarch64 executable", () => {
    const e = parseElf(binary(RELEASE.linuxArm64));
    expect(e).toMatchObject({ magic: "\x7fELF", elfClass: 2, data: 1, machine: EM_AARCH64 });
    expect([2, 3]).toContain(e.type);
  });

  test("SHA256SUMS lists exactly the release files with their sha256", () => {
    const lines = readFileSync(join(DIST, "SHA256SUMS"), "utf8").trimEnd().split("\n");
    const listed = new Map(lines.map((line) => {
      const m = /^([0-9a-f]{64}) {2}(\S+)$/.exec(line);
      expect(m).not.toBeNull();
      return [m![2]!, m![1]!] as const;
    }));
    expect([...listed.keys()].sort()).toEqual([...RELEASE_FILES].sort());
    for (const file of RELEASE_FILES) {
      expect(listed.get(file)).toBe(createHash("sha256").update(binary(file)).digest("hex"));
    }
  });

  test("every release binary embeds every bridge source file", () => {
    const files = listBridgeFiles(BRIDGE);
    expect(files).toContain("mlx_inference.py");
    expect(files).toContain("requirements.txt");
    for (const bin of RELEASE_FILES) {
      const missing = files.filter((rel) => binary(bin).indexOf(readFileSync(join(BRIDGE, rel))) < 0);
      expect({ bin, missing }).toEqual({ bin, missing: [] });
    }
  });

  test("the release binary for this machine runs `--version`", async () => {
    const host = `${process.platform}-${process.arch}`;
    const own = { "darwin-arm64": RELEASE.darwinArm64, "linux-x64": RELEASE.linuxX64, "linux-arm64": RELEASE.linuxArm64 }[host];
    if (!own) throw new Error(`no release binary runs on ${host}; run this suite on darwin-arm64, linux-x64 or linux-arm64`);
    const version = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")).version as string;
    const r = await run([join(DIST, own), "--version"], tmpdir());
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: r.stderr });
    expect(r.stdout).toContain(version);
  });
});

describe("embedded bridge in a compiled binary", () => {
  const work = mkdtempSync(join(tmpdir(), "pensieve-bridge-e2e-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  test("materializeBridge writes the bridge tree once, content-addressed, from any cwd", async () => {
    const stub = join(work, "stub.ts");
    writeFileSync(stub, [
      `import { bridgeIsEmbedded, materializeBridge } from ${JSON.stringify(join(REPO, "src/assets/bridge-files.ts"))};`,
      `console.log(JSON.stringify({ embedded: bridgeIsEmbedded(), script: await materializeBridge(process.argv[2]!) }));`,
    ].join("\n"));
    const exe = join(work, "stub");
    const build = await run([process.execPath, join(REPO, "scripts/build.ts"), "--entry", stub, "--outfile", exe], REPO);
    expect({ code: build.code, stderr: build.stderr }).toEqual({ code: 0, stderr: build.stderr });

    const target = join(work, "cache");
    const first = await run([exe, target], tmpdir());
    expect({ code: first.code, stderr: first.stderr }).toEqual({ code: 0, stderr: "" });
    const out = JSON.parse(first.stdout) as { embedded: boolean; script: string };
    expect(out.embedded).toBe(true);
    expect(out.script.startsWith(target)).toBe(true);
    expect(out.script.endsWith("/mlx_inference.py")).toBe(true);

    const dir = resolve(out.script, "..");
    const written = [...new Bun.Glob("**/*").scanSync({ cwd: dir, onlyFiles: true, dot: false })].sort();
    const expected = listBridgeFiles(BRIDGE);
    expect(written).toEqual(expected);
    for (const rel of expected) {
      expect({ rel, same: readFileSync(join(dir, rel)).equals(readFileSync(join(BRIDGE, rel))) }).toEqual({ rel, same: true });
    }
    expect(relative(target, dir)).toMatch(/^bridge-[0-9a-f]{16}$/);

    // Idempotent: a second start (from another cwd) reuses the same directory.
    const second = await run([exe, target], REPO);
    expect(JSON.parse(second.stdout)).toEqual(out);
  }, 120_000);
});
