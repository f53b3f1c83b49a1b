import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createHash } from "node:crypto";
import { materializeBridge } from "../assets/bridge-files";
import { ensureLlamaLibs, type EnsureLlamaOptions } from "../bridge/llama-fetch";
import { llamaPlatform } from "../bridge/llama-lib";
import type { ServeConfig } from "../config";
import { ensureOpenblas } from "../models/blas";
import { setupVenvDir } from "./python";

// Run a command, streaming its output to our stderr with a prefix so progress stays visible.
async function run(cmd: string[], label: string): Promise<void> {
  process.stderr.write(`[setup] ${label}\n`);
  const proc = Bun.spawn(cmd, { stdout: "inherit", stderr: "inherit", stdin: "ignore" });
  const code = await proc.exited;
  if (code !== 0) throw new Error(`${label} failed (exit ${code}): ${cmd.join(" ")}`);
}

async function findSystemPython(explicit: string | undefined): Promise<string> {
  const candidates = explicit ? [explicit] : ["python3", "python3.13", "python3.12", "python3.11", "python3.10"];
  for (const c of candidates) {
    const path = c.includes("/") ? c : Bun.which(c);
    if (!path) continue;
    const probe = Bun.spawnSync([path, "-c", "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)"]);
    if (probe.exitCode === 0) return path;
  }
  throw new Error("Python 3.10 or newer was not found; pass --python /path/to/python3");
}

/**
 * `pensieve setup`: create the bridge's virtual environment in <home>/venv and install
 * its requirements, showing pip's progress. A second run with the same requirements is a no-op.
 */
export async function runSetup(opts: { home: string; python?: string; requirementsPath: string }): Promise<string> {
  const venv = setupVenvDir(opts.home);
  const py = join(venv, "bin", "python");
  const requirements = readFileSync(opts.requirementsPath, "utf8");
  const want = createHash("sha256").update(requirements).digest("hex");
  const stamp = join(venv, ".pensieve-requirements-stamp");
  if (existsSync(py) && existsSync(stamp) && readFileSync(stamp, "utf8") === want) {
    process.stderr.write(`[setup] ${venv} is up to date\n`);
    return py;
  }
  mkdirSync(opts.home, { recursive: true });
  if (!existsSync(py)) {
    const system = await findSystemPython(opts.python);
    await run([system, "-m", "venv", venv], `creating virtual environment ${venv} with ${system}`);
  }
  await run([py, "-m", "pip", "install", "--disable-pip-version-check", "--upgrade", "pip"], "upgrading pip");
  await run([py, "-m", "pip", "install", "--disable-pip-version-check", "-r", opts.requirementsPath], "installing mlx-lm and the bridge's requirements");
  writeFileSync(stamp, want);
  process.stderr.write(`[setup] done: ${py}\n`);
  return py;
}

/**
 * `pensieve setup`'s llama.cpp step: where this platform has a pinned @node-llama-cpp package
 * and no libraries are found, fetches them into <home>/llama. Throws when the fetch fails.
 */
export async function setupLlamaLibs(opts: Omit<EnsureLlamaOptions, "log">): Promise<string | null> {
  const log = (line: string) => process.stderr.write(`[setup] ${line}\n`);
  if (llamaPlatform() === null) {
    log(`the llama engine has no prebuilt libraries for ${process.platform}-${process.arch}: serve uses mlx`);
    return null;
  }
  const libs = await ensureLlamaLibs({ ...opts, log });
  // ensureLlamaLibs has logged the reason.
  if (libs.dir === null) throw new Error("the llama.cpp libraries are not set up (see above): serve falls back to the mlx engine until they are");
  if (!libs.fetched) log(`llama.cpp libraries: ${libs.dir}`);
  return libs.dir;
}

/** `pensieve setup [--python P] [--home H]`: OpenBLAS where it can, the venv, the llama.cpp libraries. */
export async function runSetupCommand(cfg: Pick<ServeConfig, "home" | "python">): Promise<void> {
  // Here --python names the interpreter that creates the venv.
  const script = await materializeBridge(join(cfg.home, "bridge"));
  await ensureOpenblas((line) => process.stderr.write(`[setup] ${line}\n`));
  await runSetup({ home: cfg.home, requirementsPath: join(dirname(script), "requirements.txt"), ...(cfg.python ? { python: cfg.python } : {}) });
  await setupLlamaLibs({ home: cfg.home });
}
