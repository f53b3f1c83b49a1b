/** Fields of the worker commands the engine sends, and its `loaded` and `stats` replies read into engine shapes. */

import { existsSync } from "node:fs";
import { basename, resolve } from "node:path";
import type { MlxMemory, ModelInfo, PromptCacheStats, PromptInput } from "../engine/types";
import type { MlxEngineOptions } from "./mlx-engine-options";
import type { LoadedMessage, WorkerMemory, WorkerMessage, WorkerPromptCache } from "./protocol";

const count = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : 0);

/** What the engine keeps from `loaded` beyond ModelInfo: how to schedule and what the model can do. */
export interface WorkerCapabilities {
  maxConcurrency: number;
  hasToolCalling: boolean;
  toolParser: string | null;
  hasThinking: boolean;
}

export function capabilitiesOf(loaded: LoadedMessage): WorkerCapabilities {
  const n = loaded.max_concurrency;
  return {
    // Older workers do not say: one generation at a time.
    maxConcurrency: typeof n === "number" && Number.isInteger(n) && n > 1 ? n : 1,
    hasToolCalling: loaded.has_tool_calling === true,
    toolParser: typeof loaded.tool_parser === "string" ? loaded.tool_parser : null,
    hasThinking: loaded.has_thinking === true,
  };
}

export interface WorkerStatsView {
  mlx: MlxMemory;
  rssGb: number | null;
  promptCache?: PromptCacheStats;
}

/** The memory and prompt-cache figures of a `stats` reply. */
export function statsOf(reply: WorkerMessage): WorkerStatsView {
  const m = (reply.memory ?? {}) as WorkerMemory;
  const view: WorkerStatsView = {
    mlx: { activeGb: m.active_gb ?? 0, cacheGb: m.cache_gb ?? 0, peakGb: m.peak_gb ?? 0 },
    rssGb: typeof m.rss_gb === "number" ? m.rss_gb : null,
  };
  const pc = reply.prompt_cache;
  if (typeof pc === "object" && pc !== null) {
    const c = pc as WorkerPromptCache;
    view.promptCache = {
      entries: count(c.entries),
      bytes: count(c.bytes),
      maxEntries: count(c.max_entries),
      maxBytes: count(c.max_bytes),
      hits: count(c.hits),
      misses: count(c.misses),
      tokensReused: count(c.tokens_reused),
    };
  }
  return view;
}

/** The `load` command's fields. */
export function loadFields(o: MlxEngineOptions): Record<string, unknown> {
  // Every tuning value is sent: config.ts is their one source, the worker's own defaults never apply.
  const fields: Record<string, unknown> = {
    model: o.model,
    cache_limit_gb: o.cacheLimitGb,
    prompt_cache_entries: o.promptCacheEntries,
    prompt_cache_gb: o.promptCacheGb,
    max_batch: o.maxBatch,
    max_output_tokens: o.maxOutputTokens,
    loop_guard_tokens: o.loopGuardTokens,
    coalesce_ms: o.coalesceMs,
  };
  if (o.engine !== undefined) fields.engine = o.engine;
  if (o.tokenizer !== undefined) fields.tokenizer = o.tokenizer;
  return fields;
}

/** The token counter's `load` fields: it loads only a tokenizer, which the llama engine keeps beside the GGUF. */
export function counterLoadFields(o: MlxEngineOptions): Record<string, unknown> {
  return { model: o.tokenizer ?? o.model };
}

/** The prompt fields shared by `generate` and `count_tokens`. */
export function promptFields(input: PromptInput): Record<string, unknown> {
  // continue_final is always sent: the worker then follows it instead of guessing from the shape.
  return { messages: input.messages, tools: input.tools, enable_thinking: input.enableThinking, continue_final: input.continueFinal === true };
}

/** How the worker runs the model, from `loaded` (null where an older worker does not say). */
export interface WorkerRuntime {
  engine: string;
  device: string | null;
  /** The BLAS (or backend) in use, e.g. "openblas 0.3.21 (pthread, 2 threads)". */
  blas: string | null;
  dtype: string | null;
  quantization: string | null;
}

const text = (v: unknown): string | null => (typeof v === "string" && v !== "" ? v : null);

export function runtimeOf(loaded: LoadedMessage, opts: MlxEngineOptions): WorkerRuntime {
  return {
    engine: text(loaded.engine) ?? opts.engine ?? "mlx",
    device: text(loaded.device),
    blas: text(loaded.blas),
    dtype: text(loaded.dtype),
    quantization: text(loaded.quantization),
  };
}

/**
 * ModelInfo (plus the worker's runtime, when it reports one) from `loaded`; the id clients see
 * defaults to a local model's directory name.
 */
export function modelInfoOf(loaded: LoadedMessage, opts: MlxEngineOptions): ModelInfo & { runtime?: WorkerRuntime } {
  const m = opts.model;
  return {
    ...(text(loaded.engine) || text(loaded.device) ? { runtime: runtimeOf(loaded, opts) } : {}),
    id: opts.modelId ?? (existsSync(m) ? basename(resolve(m)) : m),
    path: typeof loaded.model === "string" ? loaded.model : m,
    contextLength: loaded.context_length,
    isDemo: opts.isDemo ?? false,
    supportsVision: loaded.supports_vision === true,
    kvBytesPerToken: typeof loaded.kv_bytes_per_token === "number" ? loaded.kv_bytes_per_token : 0,
  };
}
