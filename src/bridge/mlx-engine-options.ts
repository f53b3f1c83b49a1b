/**
 * Options of MlxEngine. What `pensieve serve` can set is required here and comes from
 * src/config.ts (engineTuning); DEFAULTS holds only the bridge's internal timings.
 */

import type { ServeConfig } from "../config";
import type { Logger } from "../log";

export const DEFAULTS = {
  commandTimeoutMs: 30_000,
  loadTimeoutMs: 30 * 60_000,
  restartBackoffMs: 500,
  stderrTailLines: 40,
  statsWaitMs: 200,
  statsIdleWaitMs: 750,
} as const;

export const MAX_BACKOFF_MS = 30_000;

export interface MlxEngineOptions {
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
  /** MLX cache limit passed to `load`. */
  cacheLimitGb: number;
  /** Prompt-prefix cache bounds passed to `load`. */
  promptCacheEntries: number;
  promptCacheGb: number;
  /** Most generations batched at once, passed to `load` as max_batch (1 = one at a time). */
  maxBatch: number;
  /** Output cap and loop guard passed to `load` (python_bridge/pensieve_bridge/loops.py). */
  maxOutputTokens: number;
  loopGuardTokens: number;
  /** Extra environment for the worker. */
  env?: Record<string, string | undefined>;
  /**
   * Requests allowed to wait behind the running ones; more get EngineOverloadedError.
   * Token counts have a queue of their own with the same bound.
   */
  queueLimit: number;
  /** Longest wait in the queue (generations or token counts) before EngineOverloadedError. */
  queueTimeoutMs: number;
  /** A running generation with no worker event for this long times out and the worker is restarted. */
  requestTimeoutMs: number;
  /**
   * Timeout of a running count_tokens (the token counter is then restarted; the model worker
   * never is), of stats and of idle clear_cache (default 30 s).
   */
  commandTimeoutMs?: number;
  /**
   * How long stats() waits for fresh worker figures, while generations run, before it reports the
   * last known ones (default 200 ms; up to 750 ms while none runs: /health gives stats 1 s).
   */
  statsWaitMs?: number;
  /** Timeout of `load`, which may download a model (default 30 min). */
  loadTimeoutMs?: number;
  /** Timeout for the worker's `hello` (default 60 s). */
  helloTimeoutMs?: number;
  /** First delay between back-to-back restarts; doubles up to 30 s (default 500 ms). */
  restartBackoffMs?: number;
  /** How long `stop` waits for `shutdown` before SIGTERM, then SIGKILL (each). */
  stopGraceMs: number;
  /** Worker stderr lines kept for the crash's server log entry (default 40); never shown to clients. */
  stderrTailLines?: number;
  /** Copy worker stderr to the server's stderr with a "[worker] " prefix. */
  forwardStderr?: boolean | ((text: string) => void);
  logger?: Logger;
}

/** The MlxEngine options a serve configuration sets: the one mapping from src/config.ts. */
export type EngineTuning = Pick<
  MlxEngineOptions,
  | "cacheLimitGb"
  | "promptCacheEntries"
  | "promptCacheGb"
  | "maxBatch"
  | "maxOutputTokens"
  | "loopGuardTokens"
  | "queueLimit"
  | "queueTimeoutMs"
  | "requestTimeoutMs"
  | "stopGraceMs"
>;

/** The engine settings of a serve configuration (tests pass serveDefaults()). */
export function engineTuning(cfg: ServeConfig): EngineTuning {
  return {
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
