/**
 * The model worker's last known `stats` figures. The worker answers only between
 * prefill chunks and tokens, so /health reads this cache instead of waiting on it.
 */

import type { Logger } from "../log";
import type { WorkerMessage } from "./protocol";
import { statsOf, type WorkerStatsView } from "./worker-info";
import type { WorkerProcess } from "./worker-process";

export interface StatsReading {
  view: WorkerStatsView;
  /** Milliseconds since the worker gave these figures. */
  ageMs: number;
}

/** Keeps one worker's figures; at most one `stats` request in flight. */
export class WorkerStatsCache {
  private worker: WorkerProcess | null = null;
  private view: WorkerStatsView | null = null;
  private at = 0;
  private inflight: Promise<void> | null = null;

  constructor(
    private readonly requestTimeoutMs: () => number,
    private readonly log: Logger,
  ) {}

  /** A new worker: forget the old one's figures; `loaded.memory`, when given, is the first reading. */
  reset(w: WorkerProcess, loaded?: WorkerMessage): void {
    this.worker = w;
    this.inflight = null;
    this.view = loaded && typeof loaded.memory === "object" && loaded.memory !== null ? statsOf(loaded) : null;
    this.at = performance.now();
  }

  /**
   * The latest figures of `w`: asks for fresh ones (unless a request is already out) and
   * waits for them at most `waitMs`; a busy worker gets the last known figures and their age.
   */
  async read(w: WorkerProcess | null, waitMs: number): Promise<StatsReading | null> {
    if (!w?.alive) return null;
    if (w !== this.worker) this.reset(w);
    const fresh = this.refresh(w);
    if (waitMs > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([fresh, new Promise<void>((r) => (timer = setTimeout(r, waitMs)))]);
      clearTimeout(timer);
    }
    if (this.worker !== w || this.view === null) return null;
    return { view: this.view, ageMs: Math.max(0, Math.round(performance.now() - this.at)) };
  }

  private refresh(w: WorkerProcess): Promise<void> {
    if (this.inflight) return this.inflight;
    const req = w.request("stats", {}, this.requestTimeoutMs()).then(
      (reply) => {
        if (this.worker !== w) return;
        this.view = statsOf(reply);
        this.at = performance.now();
      },
      (err) => this.log.debug("stats from worker failed", { error: String(err) }),
    );
    const tracked = req.finally(() => {
      if (this.inflight === tracked) this.inflight = null;
    });
    this.inflight = tracked;
    return tracked;
  }
}
