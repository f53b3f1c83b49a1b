// `bun run build`   -> dist/pensieve for this machine, with `bun build --compile`.
// `bun run release` -> dist/pensieve-{darwin-arm64,linux-x64,linux-arm64} and dist/SHA256SUMS.
// Flags for tests and stubs: --entry FILE, --outfile FILE (build), --outdir DIR (both).
//
// The bridge's Python sources are embedded: a plugin swaps src/assets/bridge-manifest.ts
// for a generated module that imports each file `with { type: "file" }`; another embeds the
// llama.cpp pins from package.json and bun.lock (src/bridge/llama-pins-embedded.ts).
// Cross-compiling fetches the target's Bun runtime from the npm registry
// (@oven/bun-<os>-<arch>, same version as this Bun) into Bun's install cache.
import type { BunPlugin } from "bun";
import { mkdir, rm } from "node:fs/promises";
import { basename, isAbsolute, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { listBridgeFiles, renderBridgeManifest } from "../src/assets/bridge-tree";
import { llamaPins } from "../src/bridge/llama-pins";

const ROOT = resolve(import.meta.dir, "..");
const BRIDGE_DIR = join(ROOT, "python_bridge");
const DEFAULT_ENTRY = join(ROOT, "src", "main.ts");

/** The binaries users download, by Bun compile target. */
export const RELEASE_TARGETS = [
  { target: "bun-darwin-arm64", file: "pensieve-darwin-arm64" },
  { target: "bun-linux-x64", file: "pensieve-linux-x64" },
  { target: "bun-linux-arm64", file: "pensieve-linux-arm64" },
] as const;

/** Replaces the source-mode bridge manifest with one that embeds every bridge file. */
function bridgePlugin(onEmbedded: () => void): BunPlugin {
  const files = listBridgeFiles(BRIDGE_DIR);
  if (!files.includes("mlx_inference.py")) throw new Error(`${BRIDGE_DIR}/mlx_inference.py is missing`);
  return {
    name: "pensieve-embedded-bridge",
    setup(build) {
      build.onLoad({ filter: /[\\/]src[\\/]assets[\\/]bridge-manifest\.ts$/ }, () => {
        onEmbedded();
        return { contents: renderBridgeManifest(BRIDGE_DIR, files), loader: "ts" };
      });
    },
  };
}

/** Embeds the llama.cpp pins (version and integrities from package.json and bun.lock). */
function pinsPlugin(): BunPlugin {
  const pins = llamaPins(ROOT);
  return {
    name: "pensieve-embedded-llama-pins",
    setup(build) {
      build.onLoad({ filter: /[\\/]src[\\/]bridge[\\/]llama-pins-embedded\.ts$/ }, () => ({
        contents: `export const EMBEDDED_LLAMA_PINS = ${JSON.stringify(pins)};\n`,
        loader: "ts",
      }));
    },
  };
}

async function compile(entry: string, outfile: string, target: string | undefined, requireBridge: boolean): Promise<void> {
  let embedded = false;
  const started = performance.now();
  const result = await Bun.build({
    entrypoints: [entry],
    compile: {
      ...(target ? { target: target as Bun.Build.CompileTarget } : {}),
      outfile,
      // A user's binary must not pick up a stray .env or bunfig.toml from the cwd.
      autoloadDotenv: false,
      autoloadBunfig: false,
    },
    minify: true,
    // The binary embeds its own source map (stack traces show src/ lines); the .map
    // file Bun also writes beside it is not needed.
    sourcemap: "linked",
    plugins: [bridgePlugin(() => (embedded = true)), pinsPlugin()],
    throw: false,
  });
  if (!result.success) {
    for (const log of result.logs) console.error(log);
    throw new Error(`bun build --compile failed for ${target ?? "this machine"}`);
  }
  await rm(`${outfile}.map`, { force: true });
  if (requireBridge && !embedded) {
    await rm(outfile, { force: true });
    throw new Error(`${entry} does not import src/assets/bridge-files.ts: the bridge would not be embedded`);
  }
  const size = Bun.file(outfile).size / 2 ** 20;
  const seconds = (performance.now() - started) / 1000;
  console.error(`[build] ${outfile} (${target ?? "host"}) ${size.toFixed(1)} MiB in ${seconds.toFixed(1)} s`);
}

async function sha256(path: string): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  const reader = Bun.file(path).stream().getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) hasher.update(r.value);
  return hasher.digest("hex");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Bun.argv.slice(2),
    options: {
      release: { type: "boolean", default: false },
      entry: { type: "string" },
      outfile: { type: "string" },
      outdir: { type: "string" },
    },
    strict: true,
  });
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(process.cwd(), p));
  const entry = values.entry ? abs(values.entry) : DEFAULT_ENTRY;
  const outdir = values.outdir ? abs(values.outdir) : join(ROOT, "dist");
  // The real entry must embed the bridge; a stub passed by --entry need not.
  const requireBridge = values.entry === undefined;
  if (!(await Bun.file(entry).exists())) throw new Error(`entry ${entry} does not exist`);
  await mkdir(outdir, { recursive: true });

  if (!values.release) {
    await compile(entry, values.outfile ? abs(values.outfile) : join(outdir, "pensieve"), undefined, requireBridge);
    return;
  }
  const sums: string[] = [];
  for (const { target, file } of RELEASE_TARGETS) {
    const outfile = join(outdir, file);
    await compile(entry, outfile, target, requireBridge);
    // Same layout as `sha256sum`, so `sha256sum -c SHA256SUMS` / `shasum -a 256 -c` verify it.
    sums.push(`${await sha256(outfile)}  ${basename(outfile)}`);
  }
  await Bun.write(join(outdir, "SHA256SUMS"), `${sums.join("\n")}\n`);
  console.error(`[build] ${join(outdir, "SHA256SUMS")}`);
}

if (import.meta.main) {
  await main().catch((err: unknown) => {
    console.error(`[build] ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
