import type { InferenceEngine } from "../engine/types";
import type { Logger } from "../log";
import type { SampledMemoryMonitor } from "../memory/monitor";
import { createEmergencyShutdown, type EmergencyDeps, type EmergencyShutdown } from "./emergency";
import { GuardState } from "./guard-state";
import { memoryInfo, type MemoryHealthFields } from "./memory-info";

/** What serve passes to wire memory safety together. */
export interface MemorySafetyOptions {
  monitor: SampledMemoryMonitor;
  /** The guard state to stop and drain; default a new one (pass it on to createApp). */
  state?: GuardState;
  engine: Pick<InferenceEngine, "clearCache" | "stop" | "stats">;
  log: Logger;
  /** --log-dir; default ~/.pensieve/logs. */
  logDir?: string;
  /** --drain-timeout-ms, the emergency drain (Ctrl-C/SIGTERM use --shutdown-drain-ms); default 5000. */
  drainTimeoutMs?: number;
  /** Cap on engine.stop() (the engine itself does SIGTERM -> SIGKILL after --kill-timeout-ms). */
  stopTimeoutMs?: number;
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
  const deps: EmergencyDeps = {
    log: opts.log,
    stopAccepting: (reason) => state.stopAccepting(reason),
    inflight: state.inflight,
    engine: opts.engine,
    samples: () => monitor.recentSamples(),
    thresholds: () => monitor.thresholds(),
    memorySource: monitor.source.name,
  };
  if (opts.logDir !== undefined) deps.logDir = opts.logDir;
  if (opts.drainTimeoutMs !== undefined) deps.drainTimeoutMs = opts.drainTimeoutMs;
  if (opts.stopTimeoutMs !== undefined) deps.stopTimeoutMs = opts.stopTimeoutMs;
  if (opts.exit) deps.exit = opts.exit;
  const shutdown = createEmergencyShutdown(deps);
  const onEmergency = (reason: string) => {
    if (!shutdown.triggered()) opts.onTrigger?.(reason);
    void shutdown.trigger(reason);
  };
  monitor.onEmergency((reason) => onEmergency(reason));
  return { state, shutdown, onEmergency, memoryInfo: () => memoryInfo({ monitor, state }) };
}
