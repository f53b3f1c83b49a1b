/**
 * Memory relief: the prompt-prefix cache is the first thing given up under memory pressure.
 * Trimmed on entering Caution, dropped on entering Warning or worse, before the gate refuses
 * anything (it refuses from Critical). Once per episode; again after the level improves.
 */
import type { InferenceEngine } from "../engine/types";
import type { Logger } from "../log";
import type { MemoryMonitor, MemoryStatus } from "../memory/types";

export type ReliefLevel = "none" | "trim" | "drop";

const RANK: Record<ReliefLevel, number> = { none: 0, trim: 1, drop: 2 };

/** What a memory level asks of the caches. */
export function reliefFor(status: MemoryStatus): ReliefLevel {
  if (status === "safe") return "none";
  return status === "caution" ? "trim" : "drop";
}

/** The monitor as relief reads it: its status, and level changes to subscribe to. */
export type ReliefMonitor = Pick<MemoryMonitor, "checkStatus"> & {
  /** Absent on monitors that publish no changes: then only check() acts. */
  onLevelChange?(handler: (status: MemoryStatus) => void): () => void;
};

/** What memory relief reads and acts on. */
export interface MemoryReliefOptions {
  monitor: ReliefMonitor;
  engine: Pick<InferenceEngine, "relieveMemory">;
  log?: Pick<Logger, "info" | "warn">;
}

/** Handle on memory relief. */
export interface MemoryRelief {
  /** Reads the status once and relieves if it got worse; resolves when the engine has answered. */
  check(): Promise<void>;
  /** Checks now and on every level change the monitor publishes. A no-op when the engine cannot relieve memory. */
  start(): void;
  stop(): void;
  /** The relief applied for the current episode. */
  applied(): ReliefLevel;
}

/** Builds memory relief; nothing runs until start() or check(). */
export function createMemoryRelief(opts: MemoryReliefOptions): MemoryRelief {
  let applied: ReliefLevel = "none";
  let chain: Promise<void> = Promise.resolve();
  let unsubscribe: (() => void) | null = null;

  const run = async (): Promise<void> => {
    const status = opts.monitor.checkStatus();
    const wanted = reliefFor(status);
    if (RANK[wanted] <= RANK[applied]) {
      // Improved (or unchanged): remember the lower level so a new worsening acts again.
      applied = wanted;
      return;
    }
    if (wanted === "none" || !opts.engine.relieveMemory) return;
    // Marked before the call: a failing engine is not retried every tick of the same episode.
    applied = wanted;
    try {
      await opts.engine.relieveMemory(wanted);
      opts.log?.info(`memory ${status}: prompt cache ${wanted === "trim" ? "trimmed" : "dropped"}`);
    } catch (err) {
      opts.log?.warn("memory relief failed", { level: wanted, error: String(err) });
    }
  };

  const relief: MemoryRelief = {
    check() {
      // Never overlap: a check during a relief call waits for it, then reads the status afresh.
      const next = chain.then(run);
      chain = next.catch(() => {});
      return next;
    },
    start() {
      if (unsubscribe || !opts.engine.relieveMemory) return;
      // The monitor already samples on its own timer; relief acts on what it publishes.
      unsubscribe = opts.monitor.onLevelChange?.(() => void relief.check()) ?? (() => {});
      void relief.check();
    },
    stop() {
      unsubscribe?.();
      unsubscribe = null;
    },
    applied: () => applied,
  };
  return relief;
}
