import { MEMORY_INTERVAL_RANGE_MS, memoryDefaults, memoryThresholds, type ServeConfig } from "../config";
import { createLogger, type Logger } from "../log";
import { BYTES_PER_GB, LevelTracker, checkThresholds, classify, worse, type HysteresisOptions } from "./levels";
import { createMemorySource } from "./select-source";
import type { MemoryPressure, MemoryReading, MemorySource } from "./source";
import type { MemoryMonitor, MemoryStatus, MemoryThresholds } from "./types";

/** One successful reading, as kept in the history and written to the emergency log. */
export interface MemorySample {
  /** Wall-clock time of the reading, epoch ms. */
  at: number;
  availableBytes: number;
  availableGb: number;
  /** Level of this reading alone (kernel pressure applied, before confirmation and hysteresis). */
  raw: MemoryStatus;
  /** Published level after this reading. */
  status: MemoryStatus;
  pressure?: MemoryPressure;
  /** True for the immediate re-read that checks an Emergency reading. */
  confirmation?: boolean;
  detail?: Record<string, number>;
}

export type EmergencyHandler = (reason: string, sample: MemorySample) => void;

/** Another pressure on the published level (e.g. an upstream's KV cache); it can only raise it. */
export interface PressureSource {
  checkStatus(): MemoryStatus;
}

/** The monitor's tuning (monitorTuning): --mem-*-gb, --memory-interval-ms and src/config.ts memoryDefaults. */
export interface MemoryMonitorTuning {
  thresholds: MemoryThresholds;
  /** Background sampling period, within MEMORY_INTERVAL_RANGE_MS. */
  intervalMs: number;
  /** A sample older than this counts as at least Caution. */
  staleAfterMs: number;
  hysteresis: HysteresisOptions;
  /** Samples kept for the emergency log. */
  historySize: number;
  /** Repeated read failures are logged at most this often. */
  failureLogEveryMs: number;
}

/** Settings for createMemoryMonitor: the tuning, and what it reads, tells and runs on. */
export interface MemoryMonitorConfig extends MemoryMonitorTuning {
  /** A source, or a `--memory-source` spec ("auto", "linux", "darwin", "file:PATH"). Default auto. */
  source?: MemorySource | string;
  onEmergency?: EmergencyHandler;
  log?: Logger;
  /** Monotonic clock in ms (tests inject one). Default performance.now. */
  now?: () => number;
  /** Wall clock in ms for sample timestamps. Default Date.now. */
  clock?: () => number;
  /** Further pressures: checkStatus() reports the worst of them and the local reading. */
  pressures?: readonly PressureSource[];
}

/** The monitor tuning of a serve configuration (tests pass serveDefaults()). */
export function monitorTuning(cfg: ServeConfig): MemoryMonitorTuning {
  return { ...memoryDefaults, thresholds: memoryThresholds(cfg), intervalMs: cfg.memoryIntervalMs };
}

/** The production monitor: a background sampler whose checks read the last sample. */
export interface SampledMemoryMonitor extends MemoryMonitor {
  readonly source: MemorySource;
  readonly intervalMs: number;
  readonly staleAfterMs: number;
  /** Take a first sample, then sample every interval on an unref'd timer. */
  start(): Promise<void>;
  stop(): void;
  /** Sample once now (with the Emergency re-read). Resolves null when the read failed. */
  sampleNow(): Promise<MemorySample | null>;
  lastSample(): MemorySample | null;
  /** Oldest first. */
  recentSamples(): MemorySample[];
  isStale(): boolean;
  /** ms since the last successful sample; Infinity before the first. */
  sampleAgeMs(): number;
  readFailures(): number;
  /** Subscribe to confirmed Emergency (fires once per episode). Returns an unsubscribe. */
  onEmergency(handler: EmergencyHandler): () => void;
  /** Subscribe to checkStatus() changes, seen after each sample (read or failed). Returns an unsubscribe. */
  onLevelChange(handler: (status: MemoryStatus) => void): () => void;
  /** One line for the startup banner, flagging an injected source. */
  describe(): string;
}

const PRESSURE_FLOOR: Record<MemoryPressure, MemoryStatus> = { normal: "safe", warn: "caution", critical: "critical" };

// Calls every handler; one that throws is logged and the rest still run.
function notifyAll<A extends unknown[]>(handlers: Iterable<(...args: A) => void>, args: A, log: Logger, what: string): void {
  for (const h of [...handlers]) {
    try {
      h(...args);
    } catch (err) {
      log.error(`memory: ${what} handler threw`, { error: String(err) });
    }
  }
}

/** What the readings have made of the level: published status, last sample, history. */
interface LevelState {
  current: MemoryStatus | null;
  last: MemorySample | null;
  /** Monotonic time of the last sample. */
  lastAt: number;
  /** Consecutive raw Emergency readings. */
  emergencyStreak: number;
  history: MemorySample[];
}

// Classifies readings into the level state: kernel pressure floor, the Emergency confirmation,
// hysteresis and the history; `onEmergency` fires once per confirmed Emergency episode.
function levelRecorder(config: MemoryMonitorConfig, t: MemoryThresholds, now: () => number, onEmergency: (sample: MemorySample) => void) {
  const hyst = config.hysteresis;
  const tracker = new LevelTracker(hyst);
  const clock = config.clock ?? Date.now;
  const historySize = Math.max(1, config.historySize);
  const state: LevelState = { current: null, last: null, lastAt: Number.NEGATIVE_INFINITY, emergencyStreak: 0, history: [] };
  let fired = false;

  const apply = (r: MemoryReading, confirmation: boolean): MemorySample => {
    const gb = r.availableBytes / BYTES_PER_GB;
    const floor = PRESSURE_FLOOR[r.pressure ?? "normal"];
    const raw = worse(classify(gb, t), floor);
    state.emergencyStreak = raw === "emergency" ? state.emergencyStreak + 1 : 0;
    // One Emergency reading alone is held at Critical until a second one confirms it.
    const cap = (s: MemoryStatus): MemoryStatus => (s === "emergency" && state.emergencyStreak < 2 ? "critical" : s);
    const current = tracker.update(cap(raw), cap(worse(classify(gb - hyst.marginGb, t), floor)));
    state.current = current;
    const sample: MemorySample = { at: clock(), availableBytes: r.availableBytes, availableGb: gb, raw, status: current };
    if (r.pressure) sample.pressure = r.pressure;
    if (confirmation) sample.confirmation = true;
    if (r.detail) sample.detail = r.detail;
    state.last = sample;
    state.lastAt = now();
    state.history.push(sample);
    if (state.history.length > historySize) state.history.shift();
    if (current !== "emergency") fired = false;
    else if (!fired) {
      fired = true;
      onEmergency(sample);
    }
    return sample;
  };
  return { state, apply };
}

// Reads the source, never throwing: a failed or nonsensical read is counted, logged at most
// every failureLogEveryMs, and answered null (the last sample stays, staleness takes over).
function safeReader(source: MemorySource, log: Logger, now: () => number, failureLogEveryMs: number) {
  let failures = 0;
  let failuresSinceOk = 0;
  let lastFailureLogAt = Number.NEGATIVE_INFINITY;
  const read = async (): Promise<MemoryReading | null> => {
    try {
      const reading = await source.read();
      if (!Number.isFinite(reading.availableBytes) || reading.availableBytes < 0) {
        throw new Error(`source returned ${reading.availableBytes} bytes`);
      }
      if (failuresSinceOk > 0) log.info("memory: source readable again", { source: source.name, failedReads: failuresSinceOk });
      failuresSinceOk = 0;
      return reading;
    } catch (err) {
      failures += 1;
      failuresSinceOk += 1;
      if (failuresSinceOk === 1 || now() - lastFailureLogAt >= failureLogEveryMs) {
        lastFailureLogAt = now();
        log.warn("memory: read failed; keeping the last sample", { source: source.name, error: String(err), failedReads: failuresSinceOk });
      }
      return null;
    }
  };
  return { read, failures: () => failures };
}

// Runs `tick` on demand and every interval on an unref'd timer, never two at once; `after` follows each.
function backgroundSampler<T>(tick: () => Promise<T>, after: () => void, intervalMs: number, close: () => void) {
  let ticking: Promise<T> | null = null;
  let timer: ReturnType<typeof setInterval> | null = null;
  const sampleNow = (): Promise<T> => {
    // Never overlap reads: a slow source makes the sampler skip, not pile up.
    ticking ??= tick().finally(() => {
      ticking = null;
      after();
    });
    return ticking;
  };
  const start = async (): Promise<void> => {
    if (timer) return;
    timer = setInterval(() => void sampleNow(), intervalMs);
    // The sampler must never keep the process alive on its own.
    timer.unref?.();
    await sampleNow();
  };
  const stop = (): void => {
    if (timer) clearInterval(timer);
    timer = null;
    close();
  };
  return { sampleNow, start, stop };
}

function checkInterval(intervalMs: number): void {
  const { min, max } = MEMORY_INTERVAL_RANGE_MS;
  if (!Number.isInteger(intervalMs) || intervalMs < min || intervalMs > max) {
    throw new RangeError(`memory interval must be an integer from ${min} to ${max} ms, got ${intervalMs}`);
  }
}

/** Create the monitor. Nothing is read until start() or sampleNow(). */
export function createMemoryMonitor(config: MemoryMonitorConfig): SampledMemoryMonitor {
  const t = checkThresholds(config.thresholds);
  const { intervalMs, staleAfterMs } = config;
  checkInterval(intervalMs);
  const log = config.log ?? createLogger();
  const now = config.now ?? (() => performance.now());
  const source = typeof config.source === "object" ? config.source : createMemorySource(config.source);
  const handlers = new Set<EmergencyHandler>(config.onEmergency ? [config.onEmergency] : []);
  const levelHandlers = new Set<(status: MemoryStatus) => void>();
  const pressures = config.pressures ?? [];
  const levels = levelRecorder(config, t, now, (sample) => {
    const reason = `memory emergency: ${sample.availableGb.toFixed(2)} GB available (emergency threshold ${t.emergency} GB), confirmed by two consecutive readings`;
    log.error(reason, { source: source.name });
    notifyAll(handlers, [reason, sample], log, "emergency");
  });
  const { state } = levels;
  const reader = safeReader(source, log, now, config.failureLogEveryMs);
  let published: MemoryStatus | null = null;

  const readOnce = async (confirmation: boolean) => {
    const reading = await reader.read();
    return reading ? levels.apply(reading, confirmation) : null;
  };
  const tick = async (): Promise<MemorySample | null> => {
    const first = await readOnce(false);
    // A first Emergency reading is re-read at once rather than waiting an interval.
    if (first && first.raw === "emergency" && state.emergencyStreak === 1) return (await readOnce(true)) ?? first;
    return first;
  };
  // After each sample: tell level subscribers when the reported status changed.
  const publish = () => {
    const status = monitor.checkStatus();
    if (status === published) return;
    published = status;
    notifyAll(levelHandlers, [status], log, "level");
  };
  const isStale = () => now() - state.lastAt > staleAfterMs;
  const sampler = backgroundSampler(tick, publish, intervalMs, () => source.close?.());

  const monitor: SampledMemoryMonitor = {
    source,
    intervalMs,
    staleAfterMs,
    checkStatus() {
      let s = state.current ?? "caution";
      if (isStale() && s === "safe") s = "caution";
      for (const p of pressures) s = worse(s, p.checkStatus());
      return s;
    },
    availableGb: () => (state.last ? state.last.availableGb : Number.NaN),
    thresholds: () => ({ ...t }),
    ...sampler,
    lastSample: () => state.last,
    recentSamples: () => state.history.slice(),
    isStale,
    sampleAgeMs: () => now() - state.lastAt,
    readFailures: reader.failures,
    onEmergency(handler) {
      handlers.add(handler);
      return () => handlers.delete(handler);
    },
    onLevelChange(handler) {
      levelHandlers.add(handler);
      return () => levelHandlers.delete(handler);
    },
    describe() {
      const tag = source.injected ? " — INJECTED memory source: readings come from this file, not the OS" : "";
      return `memory source: ${source.name}, sampled every ${intervalMs} ms${tag}`;
    },
  };
  return monitor;
}
