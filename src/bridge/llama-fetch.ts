/**
 * Fetches the llama.cpp libraries a compiled binary lacks: npm's @node-llama-cpp/<platform>
 * tarball at the pinned version, checked against bun.lock's integrity, unpacked (its
 * bins/<platform>/ only) into <home>/llama/<platform>-<version>/.
 */
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

import { llamaFetchDefaults } from "../config";
import { hasLibllama, LLAMA_LIB_DIR_ENV, llamaHomeRoot, llamaLibDir, llamaPlatform, pinnedLlama } from "./llama-lib";
import type { LlamaPins } from "./llama-pins";
import { readTar } from "./ustar";

/** The registry the tarballs come from unless PENSIEVE_NPM_REGISTRY names a mirror. */
export const NPM_REGISTRY = "https://registry.npmjs.org";
/** The env var naming an npm registry mirror. */
export const NPM_REGISTRY_ENV = "PENSIEVE_NPM_REGISTRY";

const SCOPE = "@node-llama-cpp";
const MiB = 2 ** 20;

export interface FetchLlamaOptions {
  home: string;
  /** The package's platform (llamaPlatform()), e.g. linux-x64. */
  platform: string;
  version: string;
  /** The tarball's `sha512-<base64>` integrity, as npm and bun.lock write it. */
  integrity: string;
  /** Registry base URL; default NPM_REGISTRY. */
  registry?: string;
  /** Progress and status lines (no trailing newline). */
  log?: (line: string) => void;
  /** Give up when no bytes arrive for this long (default: config.ts llamaFetchDefaults). */
  stallMs?: number;
  /** Refuse a tarball larger than this (default: config.ts llamaFetchDefaults). */
  maxBytes?: number;
}

/** The tarball's URL, as npm's registry lays it out. */
export function llamaTarballUrl(registry: string, platform: string, version: string): string {
  return `${registry.replace(/\/+$/, "")}/${SCOPE}/${platform}/-/${platform}-${version}.tgz`;
}

function mib(n: number): string {
  return (n / MiB).toFixed(1);
}

// Like the model fetch without tqdm: a line at most once a second, and a last one.
function byteProgress(label: string, total: number | undefined, log: (line: string) => void): (done: number, last?: boolean) => void {
  let shown = 0;
  return (done, last = false) => {
    const now = performance.now();
    if (!last && now - shown < 1000) return;
    shown = now;
    log(total ? `${label}: ${mib(done)} of ${mib(total)} MiB (${Math.floor((100 * done) / total)}%)` : `${label}: ${mib(done)} MiB`);
  };
}

async function download(url: string, label: string, o: FetchLlamaOptions): Promise<Uint8Array<ArrayBuffer>> {
  const stallMs = o.stallMs ?? llamaFetchDefaults.stallMs;
  const maxBytes = o.maxBytes ?? llamaFetchDefaults.maxBytes;
  const ctrl = new AbortController();
  let timer = setTimeout(() => ctrl.abort(), stallMs);
  const alive = () => {
    clearTimeout(timer);
    timer = setTimeout(() => ctrl.abort(), stallMs);
  };
  try {
    const res = await fetch(url, { signal: ctrl.signal, redirect: "follow" });
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status} ${res.statusText}`.trim());
    const total = Number(res.headers.get("content-length")) || undefined;
    if (total && total > maxBytes) throw new Error(`the tarball is ${mib(total)} MiB, over the ${mib(maxBytes)} MiB limit`);
    const show = byteProgress(label, total, o.log ?? (() => {}));
    const chunks: Uint8Array[] = [];
    let done = 0;
    const reader = res.body.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      const chunk = r.value;
      alive();
      chunks.push(chunk);
      done += chunk.length;
      if (done > maxBytes) throw new Error(`the tarball is over the ${mib(maxBytes)} MiB limit`);
      show(done);
    }
    show(done, true);
    const out = new Uint8Array(done);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  } catch (err) {
    if (ctrl.signal.aborted) throw new Error(`no data for ${stallMs / 1000} s`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Throws unless `bytes` match an npm `sha512-<base64>` integrity. */
export function checkIntegrity(bytes: Uint8Array, integrity: string): void {
  if (!integrity.startsWith("sha512-")) throw new Error(`unsupported integrity ${integrity} (want sha512-…)`);
  const got = `sha512-${createHash("sha512").update(bytes).digest("base64")}`;
  if (got !== integrity) throw new Error(`integrity mismatch: expected ${integrity}, got ${got}`);
}

// In-process (gunzip + ustar.ts) rather than the system tar: one behaviour on GNU and BSD tar, and only bins/<platform>/ is ever written.
function extractBins(tgz: Uint8Array<ArrayBuffer>, platform: string, into: string): void {
  const prefix = `package/bins/${platform}/`;
  for (const f of readTar(Bun.gunzipSync(tgz))) {
    if (!f.path.startsWith(prefix)) continue;
    const rel = f.path.slice("package/".length);
    if (rel.split("/").some((seg) => seg === "" || seg === "." || seg === "..")) throw new Error(`unsafe path in the tarball: ${f.path}`);
    const target = join(into, rel);
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, f.data, { mode: (f.mode & 0o755) | 0o644 });
  }
  if (!hasLibllama(join(into, "bins", platform))) throw new Error(`the tarball has no libllama under ${prefix}`);
}

/**
 * Downloads, verifies and unpacks the pinned package into <home>/llama/<platform>-<version>/
 * (through a temporary folder renamed into place); resolves with its bins/<platform> folder.
 * A copy already there is returned without any download. Throws with the reason on failure,
 * leaving nothing behind.
 */
export async function fetchLlamaLibs(o: FetchLlamaOptions): Promise<string> {
  const root = llamaHomeRoot(o.home, o.platform, o.version);
  const bins = join(root, "bins", o.platform);
  if (hasLibllama(bins)) return bins;
  const url = llamaTarballUrl(o.registry ?? NPM_REGISTRY, o.platform, o.version);
  const label = `${SCOPE}/${o.platform}@${o.version}`;
  o.log?.(`fetching the llama.cpp libraries ${label} from ${url}`);
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = await download(url, label, o);
  } catch (err) {
    throw new Error(`could not download ${url}: ${describe(err)}`);
  }
  checkIntegrity(bytes, o.integrity);
  mkdirSync(dirname(root), { recursive: true });
  const tmp = mkdtempSync(join(dirname(root), `.tmp-${o.platform}-${o.version}-`));
  try {
    extractBins(bytes, o.platform, tmp);
    writeFileSync(join(tmp, "integrity"), `${o.integrity}\n`);
    chmodSync(tmp, 0o755); // mkdtemp made it 0700
    renameSync(tmp, root);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    // Another process may have put the same verified copy in place first.
    if (hasLibllama(bins)) return bins;
    if (existsSync(root)) throw new Error(`${root} is in the way and holds no libllama: remove it and retry`);
    throw err;
  }
  o.log?.(`llama.cpp libraries ready in ${bins}`);
  return bins;
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as Error & { code?: unknown }).code;
  return typeof code === "string" && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
}

export interface EnsureLlamaOptions {
  home: string;
  log?: (line: string) => void;
  /** Read for PENSIEVE_LLAMA_LIB_DIR and PENSIEVE_NPM_REGISTRY; default process.env. */
  env?: Record<string, string | undefined>;
  /** Overrides PENSIEVE_NPM_REGISTRY and the default registry. */
  registry?: string;
  /** Default: the pins inlined from package.json and bun.lock. */
  pins?: LlamaPins;
  /** Where to look for node_modules first (see llamaLibDir). */
  roots?: string[];
  stallMs?: number;
}

/** A library folder, or why there is none. */
export type LlamaLibs = { dir: string; fetched: boolean } | { dir: null; reason: string };

/**
 * The llama.cpp library folder: one already there (llamaLibDir), else the pinned package
 * fetched from the npm registry. On failure (offline, a bad tarball, no pin for this platform)
 * logs the reason once and resolves with `dir: null`, so the caller can fall back to mlx.
 */
export async function ensureLlamaLibs(o: EnsureLlamaOptions): Promise<LlamaLibs> {
  const env = o.env ?? process.env;
  const found = llamaLibDir(env, o.home, o.roots);
  if (found) return { dir: found, fetched: false };
  const fail = (reason: string): LlamaLibs => {
    o.log?.(`no llama.cpp libraries: ${reason}`);
    return { dir: null, reason };
  };
  // An explicit folder is the user's choice: never replaced by a download.
  if (env[LLAMA_LIB_DIR_ENV]) return fail(`${LLAMA_LIB_DIR_ENV}=${env[LLAMA_LIB_DIR_ENV]} holds no libllama`);
  const platform = llamaPlatform();
  const pins = o.pins ?? pinnedLlama();
  const integrity = platform ? pins.integrity[platform] : undefined;
  if (!platform || !integrity) return fail(`none are pinned for ${process.platform}-${process.arch}`);
  try {
    const registry = o.registry ?? (env[NPM_REGISTRY_ENV] || NPM_REGISTRY);
    const dir = await fetchLlamaLibs({ home: o.home, platform, version: pins.version, integrity, registry, log: o.log, stallMs: o.stallMs });
    return { dir, fetched: true };
  } catch (err) {
    return fail(describe(err));
  }
}
