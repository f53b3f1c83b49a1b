import type { EngineState, EngineStats, InferenceEngine } from "../engine/types";
import { guardStateFor, type GuardState } from "./gate";
import type { MemoryMonitor, MemoryStatus, MemoryThresholds } from "./types";

/** The memory part of /health. */
export type MemoryHealthFields = {
  status: MemoryStatus;
  available_gb: number | null;
  thresholds_gb: MemoryThresholds;
  in_flight: number;
  /** False once the emergency shutdown has stopped accepting work. */
  accepting: boolean;
  /** Age of the last sample, when the monitor reports it. */
  sample_age_ms?: number | null;
  source?: string;
};

/** The bridge part of /health, with MLX memory in GB. */
export type BridgeHealthFields = {
  state: EngineState;
  mlx: { active_gb: number; cache_gb: number; peak_gb: number } | null;
  worker_rss_gb: number | null;
  worker_pid: number | null;
  restarts: number | null;
  queued: number | null;
  running: number | null;
  /** Set when stats could not be fetched in time; the other fields then come from state() only. */
  stats_error?: string;
};

export interface HealthDeps {
  monitor: MemoryMonitor & { sampleAgeMs?: () => number; source?: { name: string } };
  /** Default: guardStateFor(monitor). */
  state?: GuardState;
  engine?: Pick<InferenceEngine, "state" | "stats">;
  /** How long to wait for the worker's stats before answering without them. Default 500 ms. */
  statsTimeoutMs?: number;
}

const round = (n: number) => Math.round(n * 1000) / 1000;

/** The memory fields for /health, from the last sample: cheap and synchronous. */
export function memoryInfo(deps: Pick<HealthDeps, "monitor" | "state">): MemoryHealthFields {
  const { monitor } = deps;
  const state = deps.state ?? guardStateFor(monitor);
  const gb = monitor.availableGb();
  const memory: MemoryHealthFields = {
    status: monitor.checkStatus(),
    available_gb: Number.isFinite(gb) ? round(gb) : null,
    thresholds_gb: monitor.thresholds(),
    in_flight: state.inflight.count(),
    accepting: state.accepting(),
  };
  if (monitor.sampleAgeMs) {
    const age = monitor.sampleAgeMs();
    memory.sample_age_ms = Number.isFinite(age) ? Math.round(age) : null;
  }
  if (monitor.source) memory.source = monitor.source.name;
  return memory;
}

/**
 * memoryInfo plus `bridge` (state and MLX active/cache/peak in GB) when an engine is given.
 * Never throws; waits at most statsTimeoutMs for the worker.
 */
export async function memoryHealth(deps: HealthDeps): Promise<MemoryHealthFields & { bridge?: BridgeHealthFields }> {
  const memory = memoryInfo(deps);
  if (!deps.engine) return memory;
  return { ...memory, bridge: await bridgeHealth(deps.engine, deps.statsTimeoutMs ?? 500) };
}

async function bridgeHealth(engine: Pick<InferenceEngine, "state" | "stats">, timeoutMs: number): Promise<BridgeHealthFields> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`stats took over ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const s: EngineStats = await Promise.race([engine.stats(), timeout]);
    return {
      state: s.state,
      mlx: s.mlx ? { active_gb: round(s.mlx.activeGb), cache_gb: round(s.mlx.cacheGb), peak_gb: round(s.mlx.peakGb) } : null,
      worker_rss_gb: s.workerRssGb === null ? null : round(s.workerRssGb),
      worker_pid: s.workerPid,
      restarts: s.restarts,
      queued: s.queued,
      running: s.running,
    };
  } catch (err) {
    return {
      state: engine.state(),
      mlx: null,
      worker_rss_gb: null,
      worker_pid: null,
      restarts: null,
      queued: null,
      running: null,
      stats_error: err instanceof Error ? err.message : String(err),
    };
  } finally {
    clearTimeout(timer);
  }
}
