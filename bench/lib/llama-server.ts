/**
 * llama.cpp's own `llama-server`, the reference for the real-model section (bench/sections/real.ts).
 *
 * It is not installed anywhere: the bench builds it once from the llama.cpp source that ships
 * inside the npm package `node-llama-cpp` (its llama/gitRelease.bundle, a git bundle of the
 * llama.cpp release the prebuilt @node-llama-cpp/<platform> libraries were built from), at the
 * version pinned in package.json's optionalDependencies, and caches the binary in
 * .pensieve/bench-tools/llama-server-<version>/build/bin/llama-server. Nothing comes from GitHub:
 * `npm pack` fetches the tarball from the npm registry. The build takes ~10-30 min on 2 cores.
 *
 * `--llama-server PATH` uses an existing binary instead; PENSIEVE_BENCH_NO_LLAMA_SERVER=1 skips
 * the row; `--no-llama-server-build` skips it when no cached binary exists (no build).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join, resolve } from "node:path";
import { drain, freePort, log, stopProc, track, waitHttp } from "./util";

const REPO = resolve(import.meta.dir, "..", "..");
const FALLBACK_VERSION = "3.22.1";

/** The node-llama-cpp version whose llama.cpp the prebuilt libs were built from. */
export function nodeLlamaCppVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { optionalDependencies?: Record<string, string> };
    const v = pkg.optionalDependencies?.[`@node-llama-cpp/${process.platform}-${process.arch}`] ?? pkg.optionalDependencies?.["@node-llama-cpp/linux-x64"];
    if (v && /^\d+\.\d+\.\d+/.test(v)) return v.replace(/^[^\d]*/, "");
  } catch {
    // fall through
  }
  return FALLBACK_VERSION;
}

export function llamaServerCacheDir(version = nodeLlamaCppVersion()): string {
  return join(REPO, ".pensieve", "bench-tools", `llama-server-${version}`);
}

export type LlamaServerBinary = { path: string; version: string; built: "cached" | "now" | "given"; llamaCppTag: string } | { skipped: string };

async function sh(cmd: string[], cwd: string, logFile: string): Promise<void> {
  const proc = Bun.spawn(cmd, { cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const out = drain(proc.stdout, 200_000);
  const err = drain(proc.stderr, 200_000);
  const code = await proc.exited;
  writeFileSync(logFile, `$ ${cmd.join(" ")}\n${out()}\n${err()}\n`, { flag: "a" });
  if (code !== 0) throw new Error(`${cmd.slice(0, 4).join(" ")} failed (exit ${code}); see ${logFile}: ${err().trim().split("\n").slice(-3).join(" / ")}`);
}

function tagOf(dir: string): string {
  try {
    return (JSON.parse(readFileSync(join(dir, "package", "llama", "llama.cpp.info.json"), "utf8")) as { tag?: string }).tag ?? "?";
  } catch {
    return "?";
  }
}

/**
 * A native Release build. Without AMX: where the CPU lists AMX but the VM does not grant its
 * tile state (Firecracker here), ggml's AMX matmul segfaults on the first prompt.
 */
function cmakeFlags(): string[] {
  const flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_SERVER=ON", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"];
  let cpuinfo = "";
  try {
    cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    // not Linux: no AMX question
  }
  if (/\bamx_tile\b/.test(cpuinfo)) {
    // -U wins over -march=native's expansion whatever the order; the AMX code is #if'd on these.
    const noAmx = "-U__AMX_TILE__ -U__AMX_INT8__ -U__AMX_BF16__";
    flags.push(`-DCMAKE_C_FLAGS=${noAmx}`, `-DCMAKE_CXX_FLAGS=${noAmx}`);
  }
  return flags;
}

/** A live build by another bench run: its pid file names a running process. */
function buildInProgress(dir: string): number | null {
  try {
    const pid = Number(readFileSync(join(dir, "building.pid"), "utf8").trim());
    if (pid && pid !== process.pid && existsSync(`/proc/${pid}`)) return pid;
  } catch {
    // none
  }
  return null;
}

/**
 * The llama-server binary: the given one, the cached build, or a fresh build (once), or a
 * `skipped` reason the section turns into a clear row.
 */
export async function ensureLlamaServer(opts: { path?: string; build?: boolean } = {}): Promise<LlamaServerBinary> {
  if (process.env.PENSIEVE_BENCH_NO_LLAMA_SERVER === "1") return { skipped: "skipped: PENSIEVE_BENCH_NO_LLAMA_SERVER=1" };
  const version = nodeLlamaCppVersion();
  if (opts.path) {
    const p = resolve(opts.path);
    if (!existsSync(p) || !statSync(p).isFile()) return { skipped: `skipped: --llama-server ${opts.path} is not a file` };
    return { path: p, version, built: "given", llamaCppTag: "?" };
  }
  const dir = llamaServerCacheDir(version);
  const bin = join(dir, "build", "bin", "llama-server");
  const stamp = join(dir, "build-flags");
  if (existsSync(bin) && existsSync(stamp) && readFileSync(stamp, "utf8") === cmakeFlags().join(" ")) {
    return { path: bin, version, built: "cached", llamaCppTag: tagOf(dir) };
  }
  rmSync(join(dir, "build"), { recursive: true, force: true }); // built with other flags: rebuild
  const busy = buildInProgress(dir);
  if (busy) return { skipped: `skipped: llama-server is being built by pid ${busy} in ${dir} (rerun when it is done)` };
  if (opts.build === false) return { skipped: `skipped: no llama-server in ${dir} and --no-llama-server-build given` };
  if (process.platform === "win32") return { skipped: "skipped: building llama-server is not supported on Windows here; pass --llama-server PATH" };
  for (const tool of ["npm", "git", "cmake", "c++"]) {
    if (!Bun.which(tool)) return { skipped: `skipped: building llama-server needs ${tool} on PATH (or pass --llama-server PATH)` };
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "building.pid"), String(process.pid));
  const logFile = join(dir, "build-bench.log");
  const t0 = performance.now();
  try {
    log(`llama-server: building it once from node-llama-cpp@${version}'s bundled llama.cpp source into ${dir} (takes ~10-30 min on 2 cores; cached afterwards)`);
    const tgz = join(dir, `node-llama-cpp-${version}.tgz`);
    if (!existsSync(tgz)) await sh(["npm", "pack", `node-llama-cpp@${version}`, "--silent"], dir, logFile);
    if (!existsSync(join(dir, "package", "llama", "gitRelease.bundle"))) {
      await sh(["tar", "xzf", tgz, "package/llama/gitRelease.bundle", "package/llama/llama.cpp.info.json"], dir, logFile);
    }
    if (!existsSync(join(dir, "src", "CMakeLists.txt"))) {
      rmSync(join(dir, "src"), { recursive: true, force: true });
      await sh(["git", "clone", "--quiet", join(dir, "package", "llama", "gitRelease.bundle"), "src"], dir, logFile);
    }
    const nice = Bun.which("nice") ? ["nice", "-n", "19"] : [];
    await sh([...nice, "cmake", "-S", "src", "-B", "build", ...cmakeFlags()], dir, logFile);
    await sh([...nice, "cmake", "--build", "build", "--target", "llama-server", "-j", String(Math.max(1, cpus().length))], dir, logFile);
    if (!existsSync(bin)) throw new Error(`the build finished but ${bin} is missing`);
    writeFileSync(stamp, cmakeFlags().join(" "));
    log(`llama-server: built in ${((performance.now() - t0) / 60_000).toFixed(1)} min`);
    return { path: bin, version, built: "now", llamaCppTag: tagOf(dir) };
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    log(`llama-server: build failed: ${msg}`);
    return { skipped: `skipped: llama-server could not be built (${msg.slice(0, 200)})` };
  } finally {
    rmSync(join(dir, "building.pid"), { force: true });
  }
}

export interface LlamaServer {
  url: string;
  pid: number;
  output(): string;
  stop(): Promise<void>;
}

/**
 * `llama-server -m GGUF` on 127.0.0.1 on a free port, one slot (so the slot's own prompt cache
 * serves the next turn), `--jinja` (the GGUF's chat template, tools included).
 */
export async function startLlamaServer(bin: string, gguf: string, opts: { ctx?: number; threads?: number; extraArgs?: string[] } = {}): Promise<LlamaServer> {
  const port = freePort();
  const args = [
    bin,
    "-m",
    gguf,
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "-c",
    String(opts.ctx ?? 32768),
    "-np",
    "1",
    "-t",
    String(opts.threads ?? cpus().length),
    "--jinja",
    "--no-webui",
    ...(opts.extraArgs ?? []),
  ];
  const proc = track(Bun.spawn(args, { stdin: "ignore", stdout: "pipe", stderr: "pipe" }));
  const out = drain(proc.stdout);
  const err = drain(proc.stderr);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHttp(`${url}/health`, 180_000, () => proc.exitCode !== null || !!proc.signalCode, 100);
  } catch (e) {
    await stopProc(proc);
    throw new Error(`llama-server did not start: ${String(e)}\n${out()}${err().slice(-2000)}`);
  }
  return {
    url,
    pid: proc.pid,
    output: () => out() + err(),
    async stop() {
      await stopProc(proc);
    },
  };
}
