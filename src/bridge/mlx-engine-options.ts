/**
 * Options of MlxEngine. Every tuning value is required and comes from src/config.ts
 * (engineTuning): serve flags and engineDefaults.
 */

import { engineDefaults, type ServeConfig, type WorkerLoadOptions } from "../config";
import type { Logger } from "../log";

/** The MlxEngine options a serve configuration sets: its flags and src/config.ts engineDefaults. */
export interface EngineTuning extends WorkerLoadOptions, Readonly<typeof engineDefaults> {
  /**
   * Requests allowed to wait behind the running ones; more get EngineOverloadedError.
   * Token counts have a queue of their own with the same bound.
   */
  queueLimit: number;
  /** Longest wait in the queue (generations or token counts) before EngineOverloadedError. */
  queueTimeoutMs: number;
  /** A running generation with no worker event for this long times out and the worker is restarted. */
  requestTimeoutMs: number;
  /** How long `stop` waits for `shutdown` before SIGTERM, then SIGKILL (each). */
  stopGraceMs: number;
}

export interface MlxEngineOptions extends EngineTuning {
  /** Interpreter that runs the worker (tests pass process.execPath with a fake worker). */
  python: string;
  /** Path to python_bridge/mlx_inference.py. */
  script: string;
  /** Local model directory or Hugging Face id (llama engine: a GGUF file), passed to `load`. */
  model: string;
  /** What runs the model in the worker, passed to `load` as `engine` (worker default mlx). */
  engine?: "mlx" | "llama";
  /** llama engine: directory with the GGUF's tokenizer and configs, passed to `load` as `tokenizer`. */
  tokenizer?: string;
  /** Id clients see; default: the directory name of a local path, else `model`. */
  modelId?: string;
  /** The generated demo model with random weights. */
  isDemo?: boolean;
  /** Extra environment for the worker. */
  env?: Record<string, string | undefined>;
  /** Copy worker stderr to the server's stderr with a "[worker] " prefix. */
  forwardStderr?: boolean | ((text: string) => void);
  logger?: Logger;
}

/** The engine settings of a serve configuration (tests pass serveDefaults()). */
export function engineTuning(cfg: ServeConfig): EngineTuning {
  return {
    ...engineDefaults,
    cacheLimitGb: cfg.cacheLimitGb,
    promptCacheEntries: cfg.promptCacheEntries,
    promptCacheGb: cfg.promptCacheGb,
    maxBatch: cfg.maxBatch,
    maxOutputTokens: cfg.maxOutputTokens,
    loopGuardTokens: cfg.loopGuardTokens,
    queueLimit: cfg.queueLimit,
    queueTimeoutMs: cfg.queueTimeoutMs,
    requestTimeoutMs: cfg.requestTimeoutMs,
    stopGraceMs: cfg.killTimeoutMs,
  };
}
