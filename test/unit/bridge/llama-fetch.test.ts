import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { checkIntegrity, ensureLlamaLibs, fetchLlamaLibs, llamaTarballUrl, NPM_REGISTRY } from "../../../src/bridge/llama-fetch";
import { llamaHomeRoot, llamaLibDir, llamaPlatform, pinnedLlama } from "../../../src/bridge/llama-lib";
import { llamaPins } from "../../../src/bridge/llama-pins";
import { setupLlamaLibs } from "../../../src/cli/setup";
import { fakePackage, fakeRegistry, sri, tarballPath } from "./npm-fixture";

const work = mkdtempSync(join(tmpdir(), "pensieve-llama-fetch-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const freshHome = () => join(work, `home-${++n}`);

const P = "linux-x64";
const V = "9.9.9";
const good = fakePackage(P);
const reg = fakeRegistry({ [tarballPath(P, V)]: good });
afterAll(() => reg.stop());

// The host's platform, for the paths that look it up themselves (llamaLibDir, ensureLlamaLibs).
const host = llamaPlatform();
const hostPkg = host ? fakePackage(host) : new Uint8Array();
// The real pinned version (llamaLibDir looks for it), with the fake package's integrity.
const HV = pinnedLlama().version;
const hostReg = fakeRegistry(host ? { [tarballPath(host, HV)]: hostPkg } : {});
afterAll(() => hostReg.stop());
const hostPins = { version: HV, integrity: host ? { [host]: sri(hostPkg) } : {} };

function collect(): { lines: string[]; log: (l: string) => void } {
  const lines: string[] = [];
  return { lines, log: (l) => lines.push(l) };
}

describe("the pins", () => {
  test("come from package.json's optionalDependencies and bun.lock, read once when first needed from source", () => {
    const root = resolve(import.meta.dir, "../../..");
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    const pins = llamaPins();
    expect(pins.version).toBe(pkg.optionalDependencies["@node-llama-cpp/linux-x64"]);
    expect(Object.keys(pins.integrity).sort()).toEqual(["linux-arm64", "linux-x64", "mac-arm64-metal"]);
    for (const v of Object.values(pins.integrity)) expect(v).toMatch(/^sha512-[A-Za-z0-9+/]{86}==$/);
    expect(pins.integrity["linux-x64"]).toStartWith("sha512-Totj6RTDMGo3");
    expect(pinnedLlama()).toEqual(pins);
  });

  test("a lockfile that disagrees with package.json is refused", () => {
    const root = join(work, "stale");
    mkdirSync(root);
    writeFileSync(join(root, "package.json"), JSON.stringify({ optionalDependencies: { "@node-llama-cpp/linux-x64": "3.22.0" } }));
    writeFileSync(join(root, "bun.lock"), `{ // jsonc\n "packages": { "@node-llama-cpp/linux-x64": ["@node-llama-cpp/linux-x64@3.21.1", "", {}, "sha512-x"], }, }`);
    expect(() => llamaPins(root)).toThrow(/run bun install/);
  });

  test("the default registry is npm's, with the registry's tarball layout", () => {
    expect(llamaTarballUrl(NPM_REGISTRY, "linux-x64", "3.21.1")).toBe(
      "https://registry.npmjs.org/@node-llama-cpp/linux-x64/-/linux-x64-3.21.1.tgz",
    );
    expect(llamaTarballUrl("http://mirror/npm/", "mac-arm64-metal", "1.0.0")).toBe("http://mirror/npm/@node-llama-cpp/mac-arm64-metal/-/mac-arm64-metal-1.0.0.tgz");
  });
});

describe("fetchLlamaLibs", () => {
  test("a verified download extracts bins/<platform>/ only, with progress, and a second call is a no-op", async () => {
    const home = freshHome();
    const { lines, log } = collect();
    const opts = { home, platform: P, version: V, integrity: sri(good), registry: reg.url, log };
    const before = reg.requests.length;
    const dir = await fetchLlamaLibs(opts);
    const root = llamaHomeRoot(home, P, V);
    expect(dir).toBe(join(root, "bins", P));
    expect(readdirSync(dir).sort()).toEqual(["_nlcBuildMetadata.json", "libggml-base.so", "libllama.v0.4.0.so"]);
    expect(readFileSync(join(dir, "libllama.v0.4.0.so"), "utf8")).toBe("LLAMA");
    expect(readdirSync(root).sort()).toEqual(["bins", "integrity"]);
    expect(readdirSync(join(home, "llama"))).toEqual([`${P}-${V}`]);
    expect(lines.some((l) => l.includes(`${reg.url}/@node-llama-cpp/${P}/-/${P}-${V}.tgz`))).toBe(true);
    expect(lines.some((l) => new RegExp(`@node-llama-cpp/${P}@${V}: [\\d.]+ of [\\d.]+ MiB \\(100%\\)`).test(l))).toBe(true);
    expect(reg.requests.length).toBe(before + 1);
    const mtime = statSync(root).mtimeMs;
    expect(await fetchLlamaLibs(opts)).toBe(dir);
    expect(reg.requests.length).toBe(before + 1);
    expect(statSync(root).mtimeMs).toBe(mtime);
  });

  test("a wrong integrity is refused and leaves nothing behind", async () => {
    const home = freshHome();
    const other = sri(fakePackage(P, [{ path: "package/x", data: "x" }]));
    const run = fetchLlamaLibs({ home, platform: P, version: V, integrity: other, registry: reg.url });
    await expect(run).rejects.toThrow(/integrity mismatch: expected sha512-/);
        expect(existsSync(home)).toBe(false);
  });

  test("a tarball without libllama, or with an unsafe path, is refused and leaves no folder", async () => {
    const cases = [fakePackage(P, [], false), fakePackage(P, [{ path: `package/bins/${P}/../../../escape`, data: "!" }])];
    const r = fakeRegistry({ [tarballPath(P, "1.0.0")]: cases[0]!, [tarballPath(P, "2.0.0")]: cases[1]! });
    try {
      for (const [i, tgz] of cases.entries()) {
        const home = freshHome();
        const run = fetchLlamaLibs({ home, platform: P, version: `${i + 1}.0.0`, integrity: sri(tgz), registry: r.url });
        await expect(run).rejects.toThrow(i === 0 ? /no libllama/ : /unsafe path/);
                expect(readdirSync(join(home, "llama"))).toEqual([]);
        expect(existsSync(join(work, "escape"))).toBe(false);
      }
    } finally {
      r.stop();
    }
  });

  test("an HTTP error, a closed port and a stalled transfer say so", async () => {
    const home = freshHome();
    const base = { home, platform: P, integrity: sri(good) };
    await expect(fetchLlamaLibs({ ...base, version: "0.0.1", registry: reg.url })).rejects.toThrow(/could not download .*HTTP 404/);
    const closed = fakeRegistry({});
    closed.stop();
    await expect(fetchLlamaLibs({ ...base, version: V, registry: closed.url })).rejects.toThrow(/could not download http:\/\/127\.0\.0\.1:\d+\//);
    const stalled = fakeRegistry({ [tarballPath(P, V)]: good }, { stall: true });
    try {
      const run = fetchLlamaLibs({ ...base, version: V, registry: stalled.url, stallMs: 200 });
      await expect(run).rejects.toThrow(/no data for 0.2 s/);
          } finally {
      stalled.stop();
    }
    expect(existsSync(home)).toBe(false);
  });

  test("a folder in the way without libllama is named, not overwritten", async () => {
    const home = freshHome();
    const root = llamaHomeRoot(home, P, V);
    mkdirSync(join(root, "junk"), { recursive: true });
    await expect(fetchLlamaLibs({ home, platform: P, version: V, integrity: sri(good), registry: reg.url })).rejects.toThrow(/is in the way and holds no libllama/);
    expect(readdirSync(join(home, "llama"))).toEqual([`${P}-${V}`]);
    expect(readdirSync(root)).toEqual(["junk"]);
  });

  test("two concurrent fetches end with one verified copy", async () => {
    const home = freshHome();
    const opts = { home, platform: P, version: V, integrity: sri(good), registry: reg.url };
    const [a, b] = await Promise.all([fetchLlamaLibs(opts), fetchLlamaLibs(opts)]);
    expect(a).toBe(b);
    expect(readdirSync(join(home, "llama"))).toEqual([`${P}-${V}`]);
  });

  test("checkIntegrity accepts only a matching sha512", () => {
    const bytes = new TextEncoder().encode("abc");
    expect(() => checkIntegrity(bytes, sri(bytes))).not.toThrow();
    expect(() => checkIntegrity(bytes, "sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=")).toThrow(/unsupported integrity/);
  });
});

describe.skipIf(host === null)("llamaLibDir and ensureLlamaLibs", () => {
  const p = host as string;

  test("llamaLibDir finds the copy in <home>/llama after PENSIEVE_LLAMA_LIB_DIR and node_modules", async () => {
    const home = freshHome();
    expect(llamaLibDir({}, home, [])).toBeNull();
    const bins = join(llamaHomeRoot(home, p), "bins", p);
    mkdirSync(bins, { recursive: true });
    writeFileSync(join(bins, "libllama.so"), "");
    expect(llamaLibDir({}, home, [])).toBe(bins);
    expect(llamaLibDir({ PENSIEVE_HOME: home }, undefined, [])).toBe(bins);
    const modules = join(work, `root-${n}`);
    const nm = join(modules, "node_modules", "@node-llama-cpp", p, "bins", p);
    mkdirSync(nm, { recursive: true });
    writeFileSync(join(nm, "libllama.so"), "");
    expect(llamaLibDir({}, home, [modules])).toBe(nm);
    expect(llamaLibDir({ PENSIEVE_LLAMA_LIB_DIR: join(work, "nowhere") }, home, [modules])).toBeNull();
  });

  test("ensureLlamaLibs fetches from PENSIEVE_NPM_REGISTRY once, then finds the copy", async () => {
    const home = freshHome();
    const { lines, log } = collect();
    const env = { PENSIEVE_NPM_REGISTRY: hostReg.url };
    const before = hostReg.requests.length;
    const first = await ensureLlamaLibs({ home, env, pins: hostPins, roots: [], log });
    const dir = join(llamaHomeRoot(home, p, HV), "bins", p);
    expect(first).toEqual({ dir, fetched: true });
    expect(llamaLibDir(env, home, [])).toBe(dir);
    expect(await ensureLlamaLibs({ home, env, pins: hostPins, roots: [], log })).toEqual({ dir, fetched: false });
    expect(hostReg.requests.slice(before)).toEqual([tarballPath(p, HV)]);
    expect(lines.filter((l) => l.startsWith("fetching")).length).toBe(1);
  });

  test("an unreachable registry gives null with the reason, logged once", async () => {
    const home = freshHome();
    const closed = fakeRegistry({});
    closed.stop();
    const { lines, log } = collect();
    const r = await ensureLlamaLibs({ home, registry: closed.url, pins: hostPins, roots: [], env: {}, log });
    expect(r.dir).toBeNull();
    expect(r.dir === null && r.reason).toMatch(/^could not download http:\/\/127\.0\.0\.1:\d+\/@node-llama-cpp\//);
    expect(lines.filter((l) => l.startsWith("no llama.cpp libraries: could not download")).length).toBe(1);
    expect(existsSync(join(home, "llama"))).toBe(false);
  });

  test("no pin for the platform, or an explicit PENSIEVE_LLAMA_LIB_DIR without libllama, fetch nothing", async () => {
    const home = freshHome();
    const before = hostReg.requests.length;
    const none = await ensureLlamaLibs({ home, registry: hostReg.url, pins: { version: HV, integrity: {} }, roots: [], env: {} });
    expect(none.dir === null && none.reason).toMatch(/none are pinned/);
    const explicit = await ensureLlamaLibs({ home, registry: hostReg.url, pins: hostPins, roots: [], env: { PENSIEVE_LLAMA_LIB_DIR: join(work, "nowhere") } });
    expect(explicit.dir === null && explicit.reason).toMatch(/PENSIEVE_LLAMA_LIB_DIR=.*holds no libllama/);
    expect(hostReg.requests.length).toBe(before);
  });

  test("pensieve setup's step fetches, and throws with the reason when it cannot", async () => {
    const home = freshHome();
    const dir = await setupLlamaLibs({ home, registry: hostReg.url, pins: hostPins, roots: [], env: {} });
    expect(dir).toBe(join(llamaHomeRoot(home, p, HV), "bins", p));
    const bad = { version: HV, integrity: { [p]: sri(good.subarray(1)) } };
    await expect(setupLlamaLibs({ home: freshHome(), registry: hostReg.url, pins: bad, roots: [], env: {} })).rejects.toThrow(/not set up \(see above\): serve falls back to the mlx engine/);
  });
});
