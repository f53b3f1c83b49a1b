import { createLogger, type Logger } from "../log";
import { BYTES_PER_GB, DEFAULT_HYSTERESIS, LevelTracker, classify, resolveThresholds, worse, type HysteresisOptions } from "./levels";
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

/** Settings for createMemoryMonitor; every field has a default. */
export interface MemoryMonitorConfig {
  /** A source, or a `--memory-source` spec ("auto", "linux", "darwin", "file:PATH"). Default auto. */
  source?: MemorySource | string;
  thresholds?: Partial<MemoryThresholds>;
  /** Background sampling period, 250-500 ms. Default 300. */
  intervalMs?: number;
  /** A sample older than this counts as at least Caution. Default 2000. */
  staleAfterMs?: number;
  hysteresis?: Partial<HysteresisOptions>;
  /** Samples kept for the emergency log. Default 40. */
  historySize?: number;
  onEmergency?: EmergencyHandler;
  log?: Logger;
  /** Monotonic clock in ms (tests inject one). Default performance.now. */
  now?: () => number;
  /** Wall clock in ms for sample timestamps. Default Date.now. */
  clock?: () => number;
  /** Repeated read failures are logged at most this often. Default 10000. */
  failureLogEveryMs?: number;
  /** Further pressures: checkStatus() reports the worst of them and the local reading. */
  pressures?: readonly PressureSource[];
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

export const MIN_INTERVAL_MS = 250;
export const MAX_INTERVAL_MS = 500;

const PRESSURE_FLOOR: Record<MemoryPressure, MemoryStatus> = { normal: "safe", warn: "caution", critical: "critical" };

/** Create the monitor. Nothing is read until start() or sampleNow(). */
export function createMemoryMonitor(config: MemoryMonitorConfig = {}): SampledMemoryMonitor {
  const t = resolveThresholds(config.thresholds);
  const intervalMs = config.intervalMs ?? 300;
  if (!Number.isInteger(intervalMs) || intervalMs < MIN_INTERVAL_MS || intervalMs > MAX_INTERVAL_MS) {
    throw new RangeError(`memory interval must be an integer from ${MIN_INTERVAL_MS} to ${MAX_INTERVAL_MS} ms, got ${intervalMs}`);
  }
  const staleAfterMs = config.staleAfterMs ?? 2000;
  const hyst: HysteresisOptions = { ...DEFAULT_HYSTERESIS, ...config.hysteresis };
  const historySize = Math.max(1, config.historySize ?? 40);
  const log = config.log ?? createLogger();
  const now = config.now ?? (() => performance.now());
  const clock = config.clock ?? Date.now;
  const failureLogEveryMs = config.failureLogEveryMs ?? 10_000;
  const source = typeof config.source === "object" ? config.source : createMemorySource(config.source);

  const tracker = new LevelTracker(hyst);
  const history: MemorySample[] = [];
  const handlers = new Set<EmergencyHandler>();
  if (config.onEmergency) handlers.add(config.onEmergency);
  const levelHandlers = new Set<(status: MemoryStatus) => void>();
  const pressures = config.pressures ?? [];
  let published: MemoryStatus | null = null;

  let current: MemoryStatus | null = null;
  let last: MemorySample | null = null;
  let lastAt = Number.NEGATIVE_INFINITY;
  let emergencyStreak = 0;
  let fired = false;
  let failures = 0;
  let failuresSinceOk = 0;
  let lastFailureLogAt = Number.NEGATIVE_INFINITY;
  let ticking: Promise<MemorySample | null> | null = null;
  let timer: ReturnType<typeof setInterval> | null = null;

  const fire = (sample: MemorySample) => {
    const reason = `memory emergency: ${sample.availableGb.toFixed(2)} GB available (emergency threshold ${t.emergency} GB), confirmed by two consecutive readings`;
    log.error(reason, { source: source.name });
    for (const h of [...handlers]) {
      try {
        h(reason, sample);
      } catch (err) {
        log.error("memory: emergency handler threw", { error: String(err) });
      }
    }
  };

  const apply = (r: MemoryReading, confirmation: boolean): MemorySample => {
    const gb = r.availableBytes / BYTES_PER_GB;
    const floor = PRESSURE_FLOOR[r.pressure ?? "normal"];
    const raw = worse(classify(gb, t), floor);
    emergencyStreak = raw === "emergency" ? emergencyStreak + 1 : 0;
    // One Emergency reading alone is held at Critical until a second one confirms it.
    const cap = (s: MemoryStatus): MemoryStatus => (s === "emergency" && emergencyStreak < 2 ? "critical" : s);
    current = tracker.update(cap(raw), cap(worse(classify(gb - hyst.marginGb, t), floor)));
    const sample: MemorySample = { at: clock(), availableBytes: r.availableBytes, availableGb: gb, raw, status: current };
    if (r.pressure) sample.pressure = r.pressure;
    if (confirmation) sample.confirmation = true;
    if (r.detail) sample.detail = r.detail;
    last = sample;
    lastAt = now();
    history.push(sample);
    if (history.length > historySize) history.shift();
    if (current === "emergency" && !fired) {
      fired = true;
      fire(sample);
    } else if (current !== "emergency") {
      fired = false;
    }
    return sample;
  };

  const readOnce = async (confirmation: boolean): Promise<MemorySample | null> => {
    let reading: MemoryReading;
    try {
      reading = await source.read();
      if (!Number.isFinite(reading.availableBytes) || reading.availableBytes < 0) {
        throw new Error(`source returned ${reading.availableBytes} bytes`);
      }
    } catch (err) {
      failures += 1;
      failuresSinceOk += 1;
      // Never throw from a read: keep the last sample, log (rate-limited), let staleness take over.
      if (failuresSinceOk === 1 || now() - lastFailureLogAt >= failureLogEveryMs) {
        lastFailureLogAt = now();
        log.warn("memory: read failed; keeping the last sample", { source: source.name, error: String(err), failedReads: failuresSinceOk });
      }
      return null;
    }
    if (failuresSinceOk > 0) log.info("memory: source readable again", { source: source.name, failedReads: failuresSinceOk });
    failuresSinceOk = 0;
    return apply(reading, confirmation);
  };

  const tick = async (): Promise<MemorySample | null> => {
    const first = await readOnce(false);
    // A first Emergency reading is re-read at once rather than waiting an interval.
    if (first && first.raw === "emergency" && emergencyStreak === 1) return (await readOnce(true)) ?? first;
    return first;
  };

  // After each sample: tell level subscribers when the reported status changed.
  const publish = () => {
    const status = monitor.checkStatus();
    if (status === published) return;
    published = status;
    for (const h of [...levelHandlers]) {
      try {
        h(status);
      } catch (err) {
        log.error("memory: level handler threw", { error: String(err) });
      }
    }
  };

  const monitor: SampledMemoryMonitor = {
    source,
    intervalMs,
    staleAfterMs,
    checkStatus() {
      let s = current ?? "caution";
      if (now() - lastAt > staleAfterMs && s === "safe") s = "caution";
      for (const p of pressures) s = worse(s, p.checkStatus());
      return s;
    },
    availableGb: () => (last ? last.availableGb : Number.NaN),
    thresholds: () => ({ ...t }),
    sampleNow() {
      // Never overlap reads: a slow source makes the sampler skip, not pile up.
      ticking ??= tick().finally(() => {
        ticking = null;
        publish();
      });
      return ticking;
    },
    async start() {
      if (timer) return;
      timer = setInterval(() => void monitor.sampleNow(), intervalMs);
      // The sampler must never keep the process alive on its own.
      timer.unref?.();
      await monitor.sampleNow();
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = null;
      source.close?.();
    },
    lastSample: () => last,
    recentSamples: () => history.slice(),
    isStale: () => now() - lastAt > staleAfterMs,
    sampleAgeMs: () => now() - lastAt,
    readFailures: () => failures,
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
