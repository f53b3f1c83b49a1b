/**
 * The local backend of `pensieve serve` (and the Python that `import` uses): the model
 * prepared, the llama.cpp libraries found or fetched, the worker's engine built.
 */
import { dirname, join } from "node:path";
import { materializeBridge } from "../assets/bridge-files";
import { ensureLlamaLibs } from "../bridge/llama-fetch";
import { LLAMA_LIB_DIR_ENV } from "../bridge/llama-lib";
import { engineTuning, MlxEngine } from "../bridge/mlx-engine";
import type { ServeConfig } from "../config";
import type { Logger } from "../log";
import { blasEnv, openblasHint } from "../models/blas";
import { chooseEngine } from "../models/engine";
import { type PreparedModel, prepareModel } from "../models/prepare";
import { parseModelSpec } from "../models/spec";
import { resolvePython } from "./python";

/** The bridge's Python, or an error saying how to get one. */
export function requirePython(cfg: Pick<ServeConfig, "python" | "home">): string {
  const found = resolvePython(cfg.python, cfg.home);
  if (!found.python) {
    throw new Error(
      `no Python environment for the bridge (looked for ${found.tried.join(", ")}).\n` +
        "Run `pensieve setup` (or `npm start` in the repository), or pass --python /path/to/python.",
    );
  }
  return found.python;
}

// The llama engine's libraries (npm's @node-llama-cpp/<platform>), when llama would run the model:
// found, else fetched from npm on first use into <home>/llama. Null when that fails: a defaulted
// llama then runs on mlx, an explicit one reaches the worker, which explains their absence.
async function llamaLibs(cfg: ServeConfig): Promise<string | null> {
  const spec = parseModelSpec(cfg.model);
  if (spec.kind === "demo" || chooseEngine(spec, cfg.engine, cfg.explicit.has("engine"), true).engine !== "llama") return null;
  const libs = await ensureLlamaLibs({ home: cfg.home, log: (line) => process.stderr.write(`pensieve: ${line}\n`) });
  return libs.dir;
}

/** The worker-backed engine for cfg.model, not started yet. */
export async function buildLocalEngine(cfg: ServeConfig, log: Logger): Promise<{ engine: MlxEngine; prepared: PreparedModel }> {
  const python = requirePython(cfg);
  const script = await materializeBridge(join(cfg.home, "bridge"));
  const bridgeDir = dirname(script);
  const llamaDir = await llamaLibs(cfg);
  const prepared = await prepareModel(cfg.model, {
    python,
    bridgeDir,
    home: cfg.home,
    engine: cfg.engine,
    engineExplicit: cfg.explicit.has("engine"),
    modelExplicit: cfg.explicit.has("model"),
    llamaReady: llamaDir !== null,
    log: (line) => process.stderr.write(`pensieve: ${line}\n`),
  });
  if (prepared.isDemo) log.info("serving the tiny demo model (random weights)");
  const blas = prepared.engine === "mlx" ? blasEnv() : llamaDir ? { [LLAMA_LIB_DIR_ENV]: llamaDir } : {};
  const hint = prepared.engine === "mlx" ? openblasHint() : null;
  if (hint) process.stderr.write(`pensieve: OpenBLAS is missing, so MLX runs on the slow reference BLAS; install it with: ${hint}\n`);
  const engine = new MlxEngine({
    python,
    script,
    model: prepared.model,
    engine: prepared.engine,
    ...(prepared.tokenizer ? { tokenizer: prepared.tokenizer } : {}),
    ...(prepared.modelId ? { modelId: prepared.modelId } : {}),
    isDemo: prepared.isDemo,
    env: blas,
    ...engineTuning(cfg),
    forwardStderr: true,
    logger: log,
  });
  return { engine, prepared };
}

/** A llama-engine load that fails is most likely a worker without that engine yet: say what to do. */
export function explainLoadError(err: unknown, prepared: PreparedModel | undefined): unknown {
  if (prepared?.engine !== "llama") return err;
  const why = err instanceof Error ? err.message : String(err);
  return new Error(
    `the llama.cpp engine could not load ${prepared.model}: ${why}\n` +
      "If this worker has no llama engine yet, serve the GGUF on the mlx engine instead: --engine mlx (PENSIEVE_ENGINE=mlx).",
  );
}
