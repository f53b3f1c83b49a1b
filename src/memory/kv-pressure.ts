/**
 * Upstream KV-cache usage as one more memory-pressure source: polls a server's Prometheus
 * metrics (vLLM, SGLang, llama-server --metrics) and maps usage onto the gate's levels.
 * The monitor takes it in `pressures` (see monitor.ts); the entry point supplies the reader.
 */
import type { PressureSource } from "./monitor";
import type { MemoryStatus } from "./types";

/** Gauges holding KV-cache usage as a 0..1 fraction, by server. */
export const KV_USAGE_METRICS = [
  "vllm:kv_cache_usage_perc", // vLLM v1 engine
  "vllm:gpu_cache_usage_perc", // vLLM v0 engine
  "sglang:token_usage",
  "llamacpp:kv_cache_usage_ratio",
] as const;

/** Usage fractions at which each level starts. There is no Emergency: that would stop Pensieve. */
export interface KvThresholds {
  caution: number;
  warning: number;
  critical: number;
}

/** The highest KV usage in a Prometheus text exposition (max over engines / label sets), or null. */
export function parseKvUsage(text: string): number | null {
  let best: number | null = null;
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!m || !(KV_USAGE_METRICS as readonly string[]).includes(m[1] as string)) continue;
    const v = Number(m[3]);
    if (Number.isFinite(v)) best = best === null ? v : Math.max(best, v);
  }
  return best;
}

/** Level for a usage fraction. */
export function kvStatus(usage: number | null, t: KvThresholds): MemoryStatus {
  if (usage === null) return "safe";
  if (usage >= t.critical) return "critical";
  if (usage >= t.warning) return "warning";
  if (usage >= t.caution) return "caution";
  return "safe";
}

/** Where the metrics text comes from (src/upstream/kv-pressure.ts reads a server's /metrics). */
export interface MetricsSource {
  readonly url: string;
  read(timeoutMs: number): Promise<string>;
}

/** Settings for KvPressurePoller (src/config.ts kvPressureDefaults). */
export interface KvPollerOptions {
  metrics: MetricsSource;
  intervalMs: number;
  thresholds: KvThresholds;
  /** A reading older than this is ignored (status safe). */
  staleAfterMs: number;
  now?: () => number;
}

/** What /health shows about the upstream's KV cache. */
export interface KvPressureInfo {
  url: string;
  usage: number | null;
  status: MemoryStatus;
  lastError: string | null;
}

/** Polls a server's metrics in the background; checkStatus() reads the last fresh reading. */
export class KvPressurePoller implements PressureSource {
  private readonly metrics: MetricsSource;
  private readonly t: KvThresholds;
  private readonly intervalMs: number;
  private readonly staleAfterMs: number;
  private readonly now: () => number;
  private usage: number | null = null;
  private at = Number.NEGATIVE_INFINITY;
  private lastError: string | null = null;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(opts: KvPollerOptions) {
    this.metrics = opts.metrics;
    this.t = { ...opts.thresholds };
    this.intervalMs = opts.intervalMs;
    this.staleAfterMs = opts.staleAfterMs;
    this.now = opts.now ?? (() => performance.now());
  }

  /** Poll once now, then every interval on an unref'd timer. */
  async start(): Promise<void> {
    await this.poll();
    this.timer ??= setInterval(() => void this.poll(), this.intervalMs);
    this.timer.unref?.();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  async poll(): Promise<void> {
    try {
      const usage = parseKvUsage(await this.metrics.read(this.intervalMs));
      if (usage === null) throw new Error(`/metrics has none of ${KV_USAGE_METRICS.join(", ")}`);
      this.usage = usage;
      this.at = this.now();
      this.lastError = null;
    } catch (e) {
      this.lastError = e instanceof Error ? e.message : String(e);
    }
  }

  /** The level of the last fresh reading; an unknown or stale usage adds no pressure. */
  checkStatus(): MemoryStatus {
    return this.now() - this.at > this.staleAfterMs ? "safe" : kvStatus(this.usage, this.t);
  }

  info(): KvPressureInfo {
    return { url: this.metrics.url, usage: this.usage, status: this.checkStatus(), lastError: this.lastError };
  }
}
