/** `pensieve import FILE|ollama:NAME`: convert a GGUF for an engine without serving; prints the result path. */
import { dirname, join } from "node:path";
import { materializeBridge } from "../assets/bridge-files";
import { defaultEngine, type ModelEngine, parseServeArgs, UsageError } from "../config";
import { importGguf } from "../models/prepare";
import { parseModelSpec } from "../models/spec";
import { requirePython } from "./local-engine";

export interface ImportArgs {
  source: string;
  engine: ModelEngine;
  dtype?: string;
  quantize?: number;
  /** Remaining serve options (--home, --python). */
  rest: string[];
}

const DTYPES = ["float32", "float16", "bfloat16"];

/** Parses `import SOURCE [--quantize 4|8] [--dtype D] [--engine mlx|llama] [--home H] [--python P]`. */
export function parseImportArgs(argv: string[], env: Record<string, string | undefined> = process.env): ImportArgs {
  let source: string | undefined;
  const out: Partial<ImportArgs> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${arg} needs a value`);
      return v;
    };
    if (arg === "--quantize") {
      const q = Number(value());
      if (q !== 4 && q !== 8) throw new UsageError("--quantize must be 4 or 8");
      out.quantize = q;
    } else if (arg === "--dtype") {
      out.dtype = value();
      if (!DTYPES.includes(out.dtype)) throw new UsageError(`--dtype must be one of ${DTYPES.join(", ")}`);
    } else if (arg === "--engine") {
      const e = value();
      if (e !== "mlx" && e !== "llama") throw new UsageError("--engine must be 'mlx' or 'llama'");
      out.engine = e;
    } else if (arg === "--home" || arg === "--python") {
      rest.push(arg, value());
    } else if (!arg.startsWith("-") && source === undefined) {
      source = arg;
    } else {
      throw new UsageError(`unknown import argument '${arg}' (pensieve import FILE.gguf|ollama:NAME[:TAG] [--quantize 4|8] [--dtype D] [--engine mlx|llama])`);
    }
  }
  if (!source) throw new UsageError("pensieve import needs a .gguf file or ollama:NAME[:TAG]");
  const envEngine = env.PENSIEVE_ENGINE;
  const engine = out.engine ?? (envEngine === "mlx" || envEngine === "llama" ? envEngine : defaultEngine());
  return { source, engine, ...(out.dtype ? { dtype: out.dtype } : {}), ...(out.quantize ? { quantize: out.quantize } : {}), rest };
}

/** Runs the import; the result (an MLX directory, or for llama the GGUF and its tokenizer directory) goes to stdout. */
export async function runImport(argv: string[]): Promise<void> {
  const a = parseImportArgs(argv);
  const spec = parseModelSpec(a.source);
  if (spec.kind !== "gguf" && spec.kind !== "ollama") throw new UsageError(`pensieve import takes a .gguf file or ollama:NAME[:TAG], not '${a.source}'`);
  const cfg = parseServeArgs(a.rest);
  const python = requirePython(cfg);
  const bridgeDir = dirname(await materializeBridge(join(cfg.home, "bridge")));
  const source = spec.kind === "gguf" ? spec.path : spec.ref;
  const { dtype, quantize } = a;
  const opts = { python, bridgeDir, home: cfg.home, engine: a.engine, engineExplicit: true, modelExplicit: true, log: () => {}, ...(dtype ? { dtype } : {}), ...(quantize ? { quantize } : {}) };
  const r = await importGguf(opts, source, a.engine);
  if (r.tokenizer) console.log(r.model);
  console.log(r.tokenizer ?? r.model);
}
