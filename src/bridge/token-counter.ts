/**
 * count_tokens on a process of its own: the worker script in its tokenizer-only mode
 * (`--counter`). A big count then never stalls a generation, and a slow one costs at
 * most a counter restart, never the model worker.
 */

import { EngineError, EngineOverloadedError, EngineTimeoutError } from "../engine/errors";
import { backoffMs, clampRetryAfter } from "../engine/retry";
import type { Logger } from "../log";
import type { WorkerProcess } from "./worker-process";

export interface TokenCounterOptions {
  /** Spawns a counter process and waits for its hello. */
  spawn(): Promise<WorkerProcess>;
  /** The counter's `load` fields (the model whose tokenizer and chat template to load). */
  loadFields(): Record<string, unknown>;
  /** Counts allowed to wait behind the running one; more get EngineOverloadedError. */
  queueLimit: number;
  /** Longest wait before a count runs (EngineOverloadedError after). */
  queueTimeoutMs: number;
  /** A running count that takes longer fails with EngineTimeoutError and the counter is restarted. */
  countTimeoutMs: number;
  loadTimeoutMs: number;
  /** First delay between back-to-back failed launches; doubles up to maxBackoffMs. */
  restartBackoffMs: number;
  maxBackoffMs: number;
  /** A restart waits at most this long for the old counter to exit (one counter at a time). */
  retireWaitMs: number;
  /** A counter that failed to launch gets this long per stop step. */
  failedLaunchGraceMs: number;
  logger: Logger;
}

interface CountJob {
  fields: Record<string, unknown>;
  resolve(n: number): void;
  reject(err: Error): void;
  queueTimer?: ReturnType<typeof setTimeout>;
}

/** One counter process, started on the first count; counts run one at a time, first come first served. */
export class TokenCounter {
  private proc: WorkerProcess | null = null;
  private launching: Promise<WorkerProcess> | null = null;
  private readonly queue: CountJob[] = [];
  private busy = false;
  private stopped = false;
  /** Consecutive failed launches; drives the backoff. */
  private failures = 0;
  // A first guess for retry hints, replaced by measured counts (not a setting).
  private avgCountMs = 200;
  /** Counter processes started after the first. */
  restarts = 0;

  constructor(private readonly opts: TokenCounterOptions) {}

  /** Pid of the running counter process, if any. */
  get pid(): number | null {
    return this.proc?.alive ? this.proc.pid : null;
  }

  /** Counts waiting, and the one running. */
  get load(): { queued: number; running: number } {
    return { queued: this.queue.length, running: this.busy ? 1 : 0 };
  }

  /** The rendered prompt's token count; throws EngineOverloadedError beyond the queue bound. */
  count(fields: Record<string, unknown>): Promise<number> {
    if (this.stopped) return Promise.reject(new EngineError("engine is not running"));
    if (this.queue.length >= this.opts.queueLimit) {
      const err = new EngineOverloadedError(`${this.queue.length} token counts already waiting`, this.retryAfter());
      return Promise.reject(err);
    }
    return new Promise<number>((resolve, reject) => {
      const job: CountJob = { fields, resolve, reject };
      job.queueTimer = setTimeout(() => {
        if (!this.dequeue(job)) return;
        const secs = Math.round(this.opts.queueTimeoutMs / 1000);
        reject(new EngineOverloadedError(`token count waited over ${secs} s`, this.retryAfter()));
      }, this.opts.queueTimeoutMs);
      this.queue.push(job);
      this.pump();
    });
  }

  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    for (const job of this.queue.splice(0)) {
      clearTimeout(job.queueTimer);
      job.reject(new EngineError("engine stopped"));
    }
    await this.launching?.catch(() => {});
    const p = this.proc;
    this.proc = null;
    await p?.stop(graceMs, graceMs);
  }

  private pump(): void {
    if (this.busy || this.stopped || this.queue.length === 0) return;
    const p = this.proc;
    if (!p?.alive) {
      this.ensure().then(
        () => this.pump(),
        (err: Error) => this.failQueue(err),
      );
      return;
    }
    const job = this.queue.shift() as CountJob;
    clearTimeout(job.queueTimer);
    this.busy = true;
    void this.run(p, job).finally(() => {
      this.busy = false;
      this.pump();
    });
  }

  private async run(p: WorkerProcess, job: CountJob): Promise<void> {
    const t0 = performance.now();
    const ms = this.opts.countTimeoutMs;
    try {
      const reply = await p.request("count_tokens", job.fields, ms);
      const n = reply.input_tokens;
      if (typeof n !== "number") throw new EngineError("token counter sent count without input_tokens");
      this.avgCountMs = 0.8 * this.avgCountMs + 0.2 * (performance.now() - t0);
      job.resolve(n);
    } catch (err) {
      if (err instanceof EngineTimeoutError && p.alive) {
        // Only the counter goes: the model worker and its generations are untouched.
        this.opts.logger.warn("token count took too long; restarting the token counter", { pid: p.pid, timeoutMs: ms });
        p.kill(`a count ran over ${ms} ms`);
        job.reject(new EngineTimeoutError(`counting the tokens took over ${ms} ms`));
      } else {
        job.reject(err as Error);
      }
    }
  }

  private ensure(): Promise<WorkerProcess> {
    if (this.proc?.alive) return Promise.resolve(this.proc);
    this.launching ??= this.launch().finally(() => (this.launching = null));
    return this.launching;
  }

  private async launch(): Promise<WorkerProcess> {
    const old = this.proc;
    this.proc = null;
    if (old) {
      this.restarts++;
      await Promise.race([old.closed, Bun.sleep(this.opts.retireWaitMs)]);
    }
    const delay = backoffMs(this.failures, this.opts.restartBackoffMs, this.opts.maxBackoffMs);
    if (delay) await Bun.sleep(delay);
    if (this.stopped) throw new EngineError("engine stopped");
    let w: WorkerProcess | null = null;
    try {
      w = await this.opts.spawn();
      await w.request("load", this.opts.loadFields(), this.opts.loadTimeoutMs);
      if (this.stopped) throw new EngineError("engine stopped");
      this.proc = w;
      this.failures = 0;
      this.opts.logger.info("token counter ready", { pid: w.pid });
      return w;
    } catch (err) {
      if (w) void w.stop(this.opts.failedLaunchGraceMs, this.opts.failedLaunchGraceMs);
      const error = err instanceof EngineError ? err : new EngineError(String(err));
      if (this.stopped) throw error;
      this.failures++;
      this.opts.logger.error("token counter failed to start", { error: error.message });
      throw error;
    }
  }

  private failQueue(err: Error): void {
    for (const job of this.queue.splice(0)) {
      clearTimeout(job.queueTimer);
      job.reject(err);
    }
  }

  private dequeue(job: CountJob): boolean {
    const i = this.queue.indexOf(job);
    if (i < 0) return false;
    this.queue.splice(i, 1);
    return true;
  }

  private retryAfter(): number {
    return clampRetryAfter(((this.queue.length + 1) * this.avgCountMs) / 1000);
  }
}
