/** Memory levels, from most to least free RAM. */
export type MemoryStatus = "safe" | "caution" | "warning" | "critical" | "emergency";

/** GB-available boundaries: above `caution` is Safe, above `warning` is Caution, and so on. */
export interface MemoryThresholds {
  caution: number; // default 3
  warning: number; // default 2
  critical: number; // default 1
  emergency: number; // default 0.5
}

export const DEFAULT_THRESHOLDS: MemoryThresholds = { caution: 3, warning: 2, critical: 1, emergency: 0.5 };

/** What the gate and headers read. Checks are cheap: they read the last background sample. */
export interface MemoryMonitor {
  checkStatus(): MemoryStatus;
  availableGb(): number;
  thresholds(): MemoryThresholds;
}
