/** The memory fields of /health (the engine's own stats, MLX memory included, sit beside them). */
import type { MemoryMonitor, MemoryStatus, MemoryThresholds } from "../memory/types";
import type { GuardState, ShutdownPhase } from "./guard-state";

/** The memory part of /health. */
export type MemoryHealthFields = {
  status: MemoryStatus;
  available_gb: number | null;
  thresholds_gb: MemoryThresholds;
  in_flight: number;
  /** False once the emergency shutdown has stopped accepting work. */
  accepting: boolean;
  /**
   * Present once Ctrl-C/SIGTERM began a graceful shutdown: "draining" while running
   * generations may finish (new ones get 503), "stopping" once the drain is over.
   */
  shutdown?: { phase: ShutdownPhase; reason: string; drain_left_ms: number };
  /** Age of the last sample, when the monitor reports it. */
  sample_age_ms?: number | null;
  source?: string;
};

/** What memoryInfo reads. */
export interface MemoryInfoDeps {
  monitor: MemoryMonitor & { sampleAgeMs?: () => number; source?: { name: string } };
  /** The guard's accepting flag, drain state and in-flight registry. */
  state: GuardState;
  /** Epoch ms, for the drain's time left; default Date.now. */
  now?: () => number;
}

const round = (n: number) => Math.round(n * 1000) / 1000;

/** The memory fields for /health, from the last sample: cheap and synchronous. */
export function memoryInfo(deps: MemoryInfoDeps): MemoryHealthFields {
  const { monitor, state } = deps;
  const gb = monitor.availableGb();
  const memory: MemoryHealthFields = {
    status: monitor.checkStatus(),
    available_gb: Number.isFinite(gb) ? round(gb) : null,
    thresholds_gb: monitor.thresholds(),
    in_flight: state.inflight.count(),
    accepting: state.accepting(),
  };
  const shutdown = state.shutdown();
  if (shutdown) {
    const left = shutdown.phase === "draining" ? Math.max(0, Math.round(shutdown.drainDeadline - (deps.now ?? Date.now)())) : 0;
    memory.shutdown = { phase: shutdown.phase, reason: shutdown.reason, drain_left_ms: left };
  }
  if (monitor.sampleAgeMs) {
    const age = monitor.sampleAgeMs();
    memory.sample_age_ms = Number.isFinite(age) ? Math.round(age) : null;
  }
  if (monitor.source) memory.source = monitor.source.name;
  return memory;
}
