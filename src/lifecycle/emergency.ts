import { engineStopTimeoutMs, type ServeConfig, shutdownDefaults } from "../config";
import type { EngineStats, InferenceEngine } from "../engine/types";
import type { Logger } from "../log";
import type { MemorySample } from "../memory/monitor";
import type { MemoryThresholds } from "../memory/types";
import {
  loggedInflight,
  writeEmergencyLog,
  type EmergencyRecord,
  type LoggedSample,
  type StepOutcome,
} from "./emergency-log";
import { shuttingDownMessage } from "./guard-state";
import type { InflightRegistry } from "./inflight";

/** The emergency's time limits (emergencyTimings): --drain-timeout-ms and src/config.ts shutdownDefaults. */
export interface EmergencyTimings {
  /** How long in-flight requests may take to finish before they are ended. */
  drainTimeoutMs: number;
  /** After aborting, how long streams get to flush their error event. */
  flushTimeoutMs: number;
  /** Caps on the bridge steps so a stuck worker can't stop the exit. */
  statsTimeoutMs: number;
  clearCacheTimeoutMs: number;
  stopTimeoutMs: number;
}

/** The emergency timings of a serve configuration (tests pass serveDefaults()). */
export function emergencyTimings(cfg: ServeConfig): EmergencyTimings {
  const { flushTimeoutMs, statsTimeoutMs, clearCacheTimeoutMs } = shutdownDefaults;
  return { drainTimeoutMs: cfg.drainTimeoutMs, flushTimeoutMs, statsTimeoutMs, clearCacheTimeoutMs, stopTimeoutMs: engineStopTimeoutMs(cfg) };
}

/** Everything the shutdown touches, injected so each step is testable in process. */
export interface EmergencyDeps extends EmergencyTimings {
  log: Logger;
  /** Step 2: the gate answers 503 from now on. */
  stopAccepting: (reason: string) => void;
  inflight: Pick<InflightRegistry, "count" | "snapshot" | "waitForDrain" | "abortAll">;
  /** Step 3a; default inflight.waitForDrain. Resolves true when drained. */
  waitForDrain?: (timeoutMs: number) => Promise<boolean>;
  /** Step 3b: end open streams with `event: error`; default inflight.abortAll. Returns how many. */
  abortOpenStreams?: (reason: Error) => number;
  engine: Pick<InferenceEngine, "clearCache" | "stop" | "stats">;
  /** Recent memory samples and thresholds for the log. */
  samples?: () => MemorySample[];
  thresholds?: () => MemoryThresholds;
  memorySource?: string;
  /** Step 6; default writes JSON into logDir. Resolves to the path written. */
  writeLog?: (record: EmergencyRecord, at: Date) => Promise<string>;
  /** Step 7; default process.exit. */
  exit?: (code: number) => void;
  /** Where the default writeLog puts the emergency log (--log-dir). */
  logDir: string;
  now?: () => Date;
}

/** The idempotent shutdown sequence, once built. */
export interface EmergencyShutdown {
  /** Run the sequence once; later calls return the same promise and do nothing else. */
  trigger(reason: string): Promise<void>;
  triggered(): boolean;
  reason(): string | null;
}

/** Rejects after `ms` if `p` has not settled; both shutdowns cap their bridge steps with it. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function toLogged(s: MemorySample): LoggedSample {
  const out: LoggedSample = {
    time: new Date(s.at).toISOString(),
    available_gb: Math.round(s.availableGb * 1000) / 1000,
    available_bytes: s.availableBytes,
    raw: s.raw,
    status: s.status,
  };
  if (s.pressure) out.pressure = s.pressure;
  if (s.confirmation) out.confirmation = true;
  if (s.detail) out.detail = s.detail;
  return out;
}

/**
 * The emergency shutdown: log, stop accepting, drain (then end open streams), clear the MLX
 * cache, stop the bridge, write the emergency log, exit 1 so a supervisor restarts us.
 * Every step is guarded: a failing or hanging step is recorded and the sequence goes on.
 */
export function createEmergencyShutdown(deps: EmergencyDeps): EmergencyShutdown {
  const now = deps.now ?? (() => new Date());
  const exit = deps.exit ?? ((code: number) => process.exit(code));
  const waitForDrain = deps.waitForDrain ?? ((ms: number) => deps.inflight.waitForDrain(ms));
  const abortOpenStreams = deps.abortOpenStreams ?? ((err: Error) => deps.inflight.abortAll(err));
  const writeLog = deps.writeLog ?? ((record: EmergencyRecord, at: Date) => writeEmergencyLog(deps.logDir, record, at));
  let running: Promise<void> | null = null;
  let why: string | null = null;

  const run = async (reason: string) => {
    const at = now();
    const steps: StepOutcome[] = [];
    const step = async <T>(name: string, fn: () => Promise<T> | T): Promise<T | undefined> => {
      const t0 = performance.now();
      try {
        const v = await fn();
        steps.push({ step: name, ok: true, ms: Math.round(performance.now() - t0) });
        return v;
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        steps.push({ step: name, ok: false, ms: Math.round(performance.now() - t0), error });
        deps.log.error(`emergency: step ${name} failed`, { error });
        return undefined;
      }
    };

    const record: EmergencyRecord = {
      time: at.toISOString(),
      reason,
      pid: process.pid,
      uptime_s: Math.round(process.uptime()),
      memory: { source: deps.memorySource ?? null, thresholds_gb: null, samples: [] },
      in_flight: [],
      drained: null,
      aborted_streams: 0,
      bridge: { stats: null },
      steps,
    };
    try {
      await step("log_reason", () => deps.log.error(`EMERGENCY SHUTDOWN: ${reason}`, { inFlight: deps.inflight.count() }));
      await step("stop_accepting", () => deps.stopAccepting(reason));
      // Snapshot what the emergency caught, and ask the still-live worker for its stats meanwhile.
      record.in_flight = loggedInflight(deps.inflight.snapshot());
      record.memory.samples = (deps.samples?.() ?? []).map(toLogged);
      record.memory.thresholds_gb = deps.thresholds?.() ?? null;
      const stats: Promise<EngineStats | null> = withTimeout(deps.engine.stats(), deps.statsTimeoutMs, "bridge stats").catch((err) => {
        record.bridge.error = err instanceof Error ? err.message : String(err);
        return null;
      });
      record.drained = (await step("drain", () => waitForDrain(deps.drainTimeoutMs))) ?? false;
      if (!record.drained) {
        const err = new Error(shuttingDownMessage(reason));
        record.aborted_streams = (await step("abort_streams", () => abortOpenStreams(err))) ?? 0;
        // Give aborted streams a moment to write their error event before the worker goes away.
        await step("flush_streams", () => waitForDrain(deps.flushTimeoutMs));
      }
      record.bridge.stats = await stats;
      await step("clear_cache", () => withTimeout(deps.engine.clearCache(), deps.clearCacheTimeoutMs, "clear_cache"));
      await step("stop_bridge", () => withTimeout(deps.engine.stop(), deps.stopTimeoutMs, "bridge stop"));
      const path = await step("write_log", () => writeLog(record, at));
      if (path) deps.log.error(`emergency log written to ${path}`);
    } finally {
      deps.log.error("emergency: exiting with code 1");
      exit(1);
    }
  };

  return {
    trigger(reason: string) {
      if (running) return running;
      why = reason;
      running = run(reason);
      return running;
    },
    triggered: () => running !== null,
    reason: () => why,
  };
}
