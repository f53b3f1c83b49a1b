/** FakeMemoryMonitor: a MemoryMonitor whose status and GB available are set by the test. */
import { memoryThresholds, serveDefaults } from "../../src/config";
import type { MemoryMonitor, MemoryStatus, MemoryThresholds } from "../../src/memory/types";

export class FakeMemoryMonitor implements MemoryMonitor {
  status: MemoryStatus;
  gb: number;
  limits: MemoryThresholds;

  constructor(opts: { status?: MemoryStatus; availableGb?: number; thresholds?: MemoryThresholds } = {}) {
    this.status = opts.status ?? "safe";
    this.gb = opts.availableGb ?? 16;
    this.limits = opts.thresholds ?? memoryThresholds(serveDefaults());
  }

  /** Sets both at once, e.g. set("critical", 0.8). */
  set(status: MemoryStatus, availableGb: number): void {
    this.status = status;
    this.gb = availableGb;
  }

  checkStatus(): MemoryStatus {
    return this.status;
  }

  availableGb(): number {
    return this.gb;
  }

  thresholds(): MemoryThresholds {
    return this.limits;
  }
}
