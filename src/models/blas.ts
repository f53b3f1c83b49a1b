/**
 * MLX's Linux CPU wheel links the reference BLAS (~5 GFLOP/s on a float32 2048² matmul);
 * Debian's OpenBLAS, preloaded into the worker, gives ~20x that with the same results.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** The Debian package that provides OpenBLAS's libblas.so.3. */
export const OPENBLAS_PACKAGE = "libopenblas0-pthread";

const MULTIARCH: Record<string, string> = { x64: "x86_64-linux-gnu", arm64: "aarch64-linux-gnu" };

/** Where Debian/Ubuntu put OpenBLAS's pthread libblas, or undefined off Linux or on other CPUs. */
export function openblasPath(platform: string = process.platform, arch: string = process.arch): string | undefined {
  const triple = MULTIARCH[arch];
  return platform === "linux" && triple ? `/usr/lib/${triple}/openblas-pthread/libblas.so.3` : undefined;
}

/** Physical cores (hyperthreads share one), from sysfs; undefined when it cannot tell. */
export function physicalCores(sysCpu = "/sys/devices/system/cpu"): number | undefined {
  try {
    const cores = new Set<string>();
    for (const d of readdirSync(sysCpu)) {
      if (!/^cpu\d+$/.test(d)) continue;
      const topo = join(sysCpu, d, "topology");
      const pkg = readFileSync(join(topo, "physical_package_id"), "utf8").trim();
      cores.add(`${pkg}:${readFileSync(join(topo, "core_id"), "utf8").trim()}`);
    }
    return cores.size || undefined;
  } catch {
    return undefined;
  }
}

export interface BlasEnvOptions {
  platform?: string;
  arch?: string;
  env?: Record<string, string | undefined>;
  exists?: (path: string) => boolean;
  cores?: number | undefined;
}

/** Environment for the worker: OpenBLAS preloaded (kept beside any LD_PRELOAD of the user's) and one thread per core. */
export function blasEnv(o: BlasEnvOptions = {}): Record<string, string> {
  const env = o.env ?? process.env;
  const lib = openblasPath(o.platform, o.arch);
  if (!lib || !(o.exists ?? existsSync)(lib)) return {};
  const preload = env.LD_PRELOAD ? `${lib}:${env.LD_PRELOAD}` : lib;
  const out: Record<string, string> = { LD_PRELOAD: env.LD_PRELOAD?.split(/[: ]/).includes(lib) ? env.LD_PRELOAD : preload };
  const cores = "cores" in o ? o.cores : physicalCores();
  // A thread per hyperthread only contends for the same FMA units; the user's own setting wins.
  if (cores && !env.OPENBLAS_NUM_THREADS) out.OPENBLAS_NUM_THREADS = String(cores);
  return out;
}

/** The one-line install command, or null when OpenBLAS is present or does not apply here. */
export function openblasHint(platform: string = process.platform, arch: string = process.arch): string | null {
  const lib = openblasPath(platform, arch);
  if (!lib || existsSync(lib)) return null;
  return `sudo apt-get install -y ${OPENBLAS_PACKAGE}   # MLX on the CPU runs ~20x faster with OpenBLAS than with its bundled reference BLAS`;
}

/**
 * Installs OpenBLAS when it is missing and we can (root with apt-get); otherwise logs the
 * command to run. Never throws: a slow BLAS is not a reason to refuse to start.
 */
export async function ensureOpenblas(log: (line: string) => void): Promise<void> {
  const hint = openblasHint();
  if (!hint) return;
  const root = process.getuid?.() === 0;
  if (!root || !Bun.which("apt-get")) {
    log(`OpenBLAS is not installed: MLX will use the slow reference BLAS. Install it with: ${hint}`);
    return;
  }
  log(`installing ${OPENBLAS_PACKAGE} with apt-get (MLX's CPU backend is ~20x faster on it)`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const run = async (cmd: string[]) => (await Bun.spawn(cmd, { env, stdin: "ignore", stdout: "ignore", stderr: "inherit" }).exited) === 0;
  const ok = (await run(["apt-get", "install", "-y", "-qq", OPENBLAS_PACKAGE])) || ((await run(["apt-get", "update", "-qq"])) && (await run(["apt-get", "install", "-y", "-qq", OPENBLAS_PACKAGE])));
  log(ok ? `${OPENBLAS_PACKAGE} installed` : `could not install ${OPENBLAS_PACKAGE}; run: ${hint}`);
}
