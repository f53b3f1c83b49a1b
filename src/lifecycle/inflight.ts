/** One request doing inference right now. Holds no prompt or generated text. */
export interface InflightEntry {
  readonly id: string;
  /** Wall-clock start, epoch ms. */
  readonly startedAt: number;
  /** e.g. "POST /v1/messages". */
  readonly route: string;
  /** Aborted by the emergency shutdown; streams then end with an `event: error`. */
  readonly controller: AbortController;
  /** Set once the response turned out to be a stream. */
  streaming: boolean;
}

/** What the emergency log records per request: id and age, nothing else. */
export interface InflightSnapshot {
  id: string;
  route: string;
  ageMs: number;
  streaming: boolean;
}

/**
 * Registry of in-flight inference requests, for /health, the drain step and the emergency log.
 * The memory guard registers every inference request; routes may also register work of their own.
 */
export class InflightRegistry {
  private readonly entries = new Map<string, InflightEntry>();
  private waiters: (() => void)[] = [];

  constructor(private readonly clock: () => number = Date.now) {}

  /** Add a request; a second registration of the same id replaces the first. */
  register(id: string, route = ""): InflightEntry {
    const entry: InflightEntry = { id, startedAt: this.clock(), route, controller: new AbortController(), streaming: false };
    this.entries.set(id, entry);
    return entry;
  }

  /** Remove a request (idempotent). Only the registered entry itself removes its id. */
  unregister(entry: InflightEntry): void {
    if (this.entries.get(entry.id) !== entry) return;
    this.entries.delete(entry.id);
    if (this.entries.size === 0) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w();
    }
  }

  count(): number {
    return this.entries.size;
  }

  list(): InflightEntry[] {
    return [...this.entries.values()];
  }

  snapshot(): InflightSnapshot[] {
    const now = this.clock();
    return this.list().map((e) => ({ id: e.id, route: e.route, ageMs: Math.max(0, now - e.startedAt), streaming: e.streaming }));
  }

  /** Resolve true once nothing is in flight, or false after timeoutMs. */
  waitForDrain(timeoutMs: number): Promise<boolean> {
    if (this.entries.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      let done = false;
      const finish = (drained: boolean) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(drained);
      };
      const timer = setTimeout(() => finish(false), Math.max(0, timeoutMs));
      this.waiters.push(() => finish(true));
    });
  }

  /** Abort every in-flight request with `reason`; returns how many were aborted. */
  abortAll(reason: Error): number {
    let n = 0;
    for (const e of this.entries.values()) {
      if (!e.controller.signal.aborted) {
        e.controller.abort(reason);
        n += 1;
      }
    }
    return n;
  }
}
