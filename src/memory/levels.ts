import type { MemoryStatus, MemoryThresholds } from "./types";

/** Bytes in one "GB" as Pensieve reports it (GiB, as macOS and free(1) -h count). */
export const BYTES_PER_GB = 1024 ** 3;

/** GB with two decimals, or "unknown" before the first reading (NaN). */
export function formatGb(gb: number): string {
  return Number.isFinite(gb) ? gb.toFixed(2) : "unknown";
}

/** Statuses from best to worst; the index is the severity. */
export const STATUS_ORDER: readonly MemoryStatus[] = ["safe", "caution", "warning", "critical", "emergency"];

const SEVERITY: Record<MemoryStatus, number> = { safe: 0, caution: 1, warning: 2, critical: 3, emergency: 4 };

/** 0 (safe) to 4 (emergency). */
export function severity(status: MemoryStatus): number {
  return SEVERITY[status];
}

/** The more severe of two statuses. */
export function worse(a: MemoryStatus, b: MemoryStatus): MemoryStatus {
  return SEVERITY[a] >= SEVERITY[b] ? a : b;
}

/**
 * Status for a GB-available figure. Each threshold is the top of its band:
 * > caution is Safe, (warning, caution] is Caution, ..., <= emergency is Emergency.
 * NaN (no reading) classifies as Emergency so that callers never treat garbage as plenty.
 */
export function classify(gb: number, t: MemoryThresholds): MemoryStatus {
  if (gb > t.caution) return "safe";
  if (gb > t.warning) return "caution";
  if (gb > t.critical) return "warning";
  if (gb > t.emergency) return "critical";
  return "emergency";
}

/** A copy of the thresholds, checked to be non-negative and strictly decreasing. */
export function checkThresholds(given: MemoryThresholds): MemoryThresholds {
  const t: MemoryThresholds = { caution: given.caution, warning: given.warning, critical: given.critical, emergency: given.emergency };
  const values = [t.caution, t.warning, t.critical, t.emergency];
  if (!values.every((v) => Number.isFinite(v) && v >= 0)) {
    throw new RangeError(`memory thresholds must be non-negative numbers, got ${JSON.stringify(t)}`);
  }
  if (!(t.caution > t.warning && t.warning > t.critical && t.critical > t.emergency)) {
    throw new RangeError(`memory thresholds must decrease (caution > warning > critical > emergency), got ${JSON.stringify(t)}`);
  }
  return t;
}

/** Hysteresis settings: how far above a boundary, and for how many samples, before stepping down. */
export interface HysteresisOptions {
  /** GB the value must clear a boundary by before the status may improve. */
  marginGb: number;
  /** Consecutive qualifying samples needed before the status improves. */
  samples: number;
}

/**
 * The published level with hysteresis: worse readings apply at once; better ones apply only
 * after `samples` consecutive readings whose margin-adjusted level is better than the current one.
 */
export class LevelTracker {
  private current: MemoryStatus | null = null;
  private streak = 0;
  private pending: MemoryStatus = "safe";

  constructor(private readonly opts: HysteresisOptions) {
    if (!(opts.samples >= 1) || !(opts.marginGb >= 0)) throw new RangeError("hysteresis needs samples >= 1 and marginGb >= 0");
  }

  level(): MemoryStatus | null {
    return this.current;
  }

  /**
   * Feed one reading. `raw` is its plain level; `withMargin` the level it supports once the
   * margin is subtracted (never better than `raw`). Returns the published level.
   */
  update(raw: MemoryStatus, withMargin: MemoryStatus): MemoryStatus {
    const cur = this.current;
    if (cur === null || SEVERITY[raw] >= SEVERITY[cur]) {
      // First reading, or escalation / steady: apply at once and forget any recovery streak.
      this.current = cur === null ? raw : worse(cur, raw);
      this.streak = 0;
      return this.current;
    }
    const candidate = worse(raw, withMargin);
    if (SEVERITY[candidate] >= SEVERITY[cur]) {
      this.streak = 0;
      return cur;
    }
    // Step down only as far as the worst reading of the streak allows.
    this.pending = this.streak === 0 ? candidate : worse(this.pending, candidate);
    this.streak += 1;
    if (this.streak < this.opts.samples) return cur;
    this.current = this.pending;
    this.streak = 0;
    return this.pending;
  }
}
