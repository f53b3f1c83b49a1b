import type { InferenceEngine } from "../engine/types";
import type { Logger } from "../log";
import type { SampledMemoryMonitor } from "../memory/monitor";
import { createEmergencyShutdown, type EmergencyShutdown, type EmergencyTimings } from "./emergency";
import { GuardState } from "./guard-state";
import { memoryInfo, type MemoryHealthFields } from "./memory-info";

/** What serve passes to wire memory safety together; the timings come from emergencyTimings. */
export interface MemorySafetyOptions extends EmergencyTimings {
  monitor: SampledMemoryMonitor;
  /** The guard state to stop and drain; default a new one (pass it on to createApp). */
  state?: GuardState;
  engine: Pick<InferenceEngine, "clearCache" | "stop" | "stats">;
  log: Logger;
  /** --log-dir. */
  logDir: string;
  /** Injected in tests; default process.exit. */
  exit?: (code: number) => void;
  /** Extra hook run before the sequence starts (e.g. stop the HTTP server's accept loop). */
  onTrigger?: (reason: string) => void;
}

/** The wired pieces, for createApp and the signal handlers. */
export interface MemorySafety {
  /** Pass to createApp({ state }) and the graceful shutdown. */
  state: GuardState;
  shutdown: EmergencyShutdown;
  /** Pass to createApp({ onEmergency }). */
  onEmergency: (reason: string) => void;
  /** Pass to createApp({ memoryInfo }). */
  memoryInfo: () => MemoryHealthFields;
}

/**
 * Wire the monitor, guard state and emergency shutdown together: both the sampler (on its own)
 * and the gate trigger the same idempotent shutdown.
 */
export function setupMemorySafety(opts: MemorySafetyOptions): MemorySafety {
  const { monitor } = opts;
  const state = opts.state ?? new GuardState();
  const { drainTimeoutMs, flushTimeoutMs, statsTimeoutMs, clearCacheTimeoutMs, stopTimeoutMs } = opts;
  const shutdown = createEmergencyShutdown({
    log: opts.log,
    stopAccepting: (reason) => state.stopAccepting(reason),
    inflight: state.inflight,
    engine: opts.engine,
    samples: () => monitor.recentSamples(),
    thresholds: () => monitor.thresholds(),
    memorySource: monitor.source.name,
    logDir: opts.logDir,
    drainTimeoutMs,
    flushTimeoutMs,
    statsTimeoutMs,
    clearCacheTimeoutMs,
    stopTimeoutMs,
    ...(opts.exit ? { exit: opts.exit } : {}),
  });
  const onEmergency = (reason: string) => {
    if (!shutdown.triggered()) opts.onTrigger?.(reason);
    void shutdown.trigger(reason);
  };
  monitor.onEmergency((reason) => onEmergency(reason));
  return { state, shutdown, onEmergency, memoryInfo: () => memoryInfo({ monitor, state }) };
}
