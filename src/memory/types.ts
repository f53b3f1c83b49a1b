/** Memory levels, from most to least free RAM. */
export type MemoryStatus = "safe" | "caution" | "warning" | "critical" | "emergency";

/** GB-available boundaries: above `caution` is Safe, above `warning` is Caution, and so on. */
export interface MemoryThresholds {
  caution: number;
  warning: number;
  critical: number;
  emergency: number;
}

/** What the gate and headers read. Checks are cheap: they read the last background sample. */
export interface MemoryMonitor {
  checkStatus(): MemoryStatus;
  availableGb(): number;
  thresholds(): MemoryThresholds;
}
