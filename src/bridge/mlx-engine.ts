/**
 * InferenceEngine backed by the Python MLX worker: a FIFO queue in front of one
 * worker process (which may run several generations at once), restarted when it dies or hangs.
 * Token counts go to a tokenizer-only counter process (token-counter.ts) with a queue of their own.
 */

import { EngineError, EngineOverloadedError, EngineTimeoutError } from "../engine/errors";
import type {
  EngineEvent,
  EngineState,
  EngineStats,
  GenerateRequest,
  InferenceEngine,
  ModelInfo,
  PromptInput,
} from "../engine/types";
import { GenerationJob, generatePayload, toEngineEvent } from "./generation-job";
import { type BridgeLogger, type LoadedMessage, type WorkerMessage, engineErrorFromReply, stderrLogger } from "./protocol";
import { DEFAULTS, MAX_BACKOFF_MS, type MlxEngineOptions } from "./mlx-engine-options";
import { newTokenCounter, processOptions } from "./processes";
import type { TokenCounter } from "./token-counter";
import { type WorkerCapabilities, capabilitiesOf, loadFields, modelInfoOf, promptFields } from "./worker-info";
import { WorkerProcess } from "./worker-process";
import { WorkerStatsCache } from "./worker-stats";

export type { MlxEngineOptions } from "./mlx-engine-options";

/**
 * The MLX bridge. As many generations at once as the worker's max_concurrency (batched there),
 * the rest wait in a FIFO queue; token counts run on a counter process of their own.
 */
export class MlxEngine implements InferenceEngine {
  private readonly log: BridgeLogger;
  private worker: WorkerProcess | null = null;
  private launching: Promise<WorkerProcess> | null = null;
  /** Exit of the last retired worker; a new one starts only after it, so two models never share RAM. */
  private retired: Promise<unknown> = Promise.resolve();
  private current: EngineState = "stopped";
  private stopped = true;
  private info: ModelInfo | null = null;
  private readonly queue: GenerationJob[] = [];
  private readonly running = new Set<GenerationJob>();
  private caps: WorkerCapabilities = capabilitiesOf({} as LoadedMessage);
  private launches = 0;
  private restarts = 0;
  /** Consecutive crashes and failed launches; drives the restart backoff. */
  private failures = 0;
  private avgGenerationMs = 5000;
  private counter: TokenCounter;
  private readonly workerStats: WorkerStatsCache;

  constructor(private readonly opts: MlxEngineOptions) {
    this.log = opts.logger ?? stderrLogger;
    this.counter = newTokenCounter(opts, this.log);
    this.workerStats = new WorkerStatsCache(() => this.commandTimeout(), this.log);
  }

  async start(): Promise<ModelInfo> {
    if (!this.stopped && this.worker?.alive && this.info) return this.info;
    if (this.stopped) {
      this.launches = 0; // a start after stop is not a restart
      this.counter = newTokenCounter(this.opts, this.log);
    }
    this.stopped = false;
    const w = await this.ensureWorker();
    if (!this.info || this.worker !== w) throw new EngineError("engine stopped while starting");
    return this.info;
  }

  model(): ModelInfo | null {
    return this.info;
  }

  state(): EngineState {
    return this.current;
  }

  /** What the loaded worker reported: concurrency, tool calling, thinking. */
  capabilities(): WorkerCapabilities {
    return { ...this.caps };
  }

  async *generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<EngineEvent> {
    if (signal?.aborted) return;
    const job = this.enqueue(req);
    const onAbort = () => this.abandon(job);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for (;;) {
        const ev = await job.take();
        if (ev === null) return;
        yield ev;
        if (ev.type === "done") return;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      // Also reached when the consumer breaks out of `for await`.
      this.abandon(job);
      job.detached = true;
    }
  }

  /** Counted on the token counter process, never in the model worker's generation loop. */
  async countTokens(input: PromptInput): Promise<number> {
    if (this.stopped) throw new EngineError("engine is not running");
    // The counter loads what the worker loaded: a hub model is downloaded by then.
    if (!this.info) await this.ensureWorker();
    return this.counter.count(promptFields(input));
  }

  async clearCache(): Promise<void> {
    if (!this.worker?.alive) return;
    // The worker answers clear_cache only after a running generation; its idle timer guards that wait.
    await this.command("clear_cache", {}, this.running.size ? undefined : this.commandTimeout());
  }

  /** Trims ("trim") or empties ("drop") the worker's prompt-prefix cache; a no-op without a worker. */
  async relieveMemory(level: "trim" | "drop"): Promise<void> {
    if (!this.worker?.alive) return;
    await this.command("cache_relieve", { level }, this.commandTimeout());
  }

  /** Answers within statsWaitMs: counts from the engine, the worker's figures as last known (statsAgeMs). */
  async stats(): Promise<EngineStats> {
    const w = this.worker?.alive ? this.worker : null;
    const busyWait = this.opts.statsWaitMs ?? DEFAULTS.statsWaitMs;
    // A worker with no generation answers at once; a loaded machine may still take a moment.
    const wait = this.running.size ? busyWait : Math.max(busyWait, DEFAULTS.statsIdleWaitMs);
    const reading = await this.workerStats.read(w, wait);
    const view = reading?.view;
    const stats: EngineStats = {
      state: this.current,
      model: this.info,
      queued: this.queue.length,
      running: this.running.size,
      mlx: view?.mlx ?? null,
      workerRssGb: view?.rssGb ?? null,
      workerPid: w?.alive ? w.pid : null,
      restarts: this.restarts,
    };
    if (view?.promptCache) stats.promptCache = view.promptCache;
    if (reading) stats.statsAgeMs = reading.ageMs;
    return stats;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.current = "stopped";
    for (const job of this.queue.splice(0)) this.finishQueued(job, new EngineError("engine stopped"));
    for (const job of this.running) this.sendCancel(job);
    await this.launching?.catch(() => {});
    const w = this.worker;
    this.worker = null;
    const grace = this.opts.stopGraceMs ?? DEFAULTS.stopGraceMs;
    await Promise.all([w?.stop(grace, grace), this.counter.stop(grace)]);
  }

  // ---- queue ----

  private enqueue(req: GenerateRequest): GenerationJob {
    if (this.stopped) throw new EngineError("engine is not running");
    const limit = this.opts.queueLimit ?? DEFAULTS.queueLimit;
    if (this.queue.length >= limit) {
      throw new EngineOverloadedError(`${this.queue.length} requests already waiting for the model`, this.retryAfter());
    }
    const job = new GenerationJob(req);
    const waitMs = this.opts.queueTimeoutMs ?? DEFAULTS.queueTimeoutMs;
    job.queueTimer = setTimeout(() => {
      if (job.state !== "queued") return;
      this.removeQueued(job);
      const secs = Math.round(waitMs / 1000);
      const err = new EngineOverloadedError(`request waited over ${secs} s for the model`, this.retryAfter());
      this.finishQueued(job, err);
    }, waitMs);
    this.queue.push(job);
    this.pump();
    return job;
  }

  /** Starts queued jobs while the worker has free slots, (re)starting the worker if needed. */
  private pump(): void {
    if (this.queue.length === 0 || this.stopped) return;
    const w = this.worker;
    if (!w?.alive) {
      if (this.running.size) return; // the dying worker's jobs fail first; its close handler restarts
      this.ensureWorker().then(
        () => this.pump(),
        () => {}, // launch() already failed the queue
      );
      return;
    }
    while (this.running.size < this.caps.maxConcurrency && this.queue.length > 0) {
      this.dispatch(this.queue.shift() as GenerationJob, w);
    }
  }

  private dispatch(job: GenerationJob, w: WorkerProcess): void {
    clearTimeout(job.queueTimer);
    job.state = "running";
    job.startedAt = performance.now();
    job.worker = w;
    this.running.add(job);
    try {
      job.workerId = w.send("generate", generatePayload(job.req), {
        onMessage: (msg) => this.onJobMessage(job, msg),
        onFailure: (err) => this.finishRunning(job, err),
      });
    } catch (err) {
      this.finishRunning(job, err as Error);
      return;
    }
    this.armIdleTimer(job);
  }

  private onJobMessage(job: GenerationJob, msg: WorkerMessage): boolean {
    if (job.state !== "running") return true;
    this.armIdleTimer(job);
    const ev = toEngineEvent(msg);
    if (ev === "error") {
      this.finishRunning(job, engineErrorFromReply(msg));
      return true;
    }
    if (ev === null) {
      this.log.debug?.("ignoring unknown worker message", { type: msg.type });
      return false;
    }
    job.deliver(ev);
    if (ev.type !== "done") return false;
    this.failures = 0;
    this.finishRunning(job);
    return true;
  }

  /** A running generation with no worker event for requestTimeoutMs: fail it and replace the worker. */
  private armIdleTimer(job: GenerationJob): void {
    clearTimeout(job.idleTimer);
    const ms = this.opts.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
    job.idleTimer = setTimeout(() => {
      if (job.state !== "running") return;
      const w = job.worker;
      this.finishRunning(job, new EngineTimeoutError(`the model worker sent nothing for ${ms} ms`));
      this.log.error("worker hung during a generation; killing it", { pid: w?.pid, requestId: job.req.requestId });
      w?.kill(`no event for ${ms} ms during a generation`);
    }, ms);
  }

  private finishRunning(job: GenerationJob, error?: Error): void {
    if (job.state !== "running") return;
    job.state = "finished";
    clearTimeout(job.idleTimer);
    if (job.workerId) job.worker?.forget(job.workerId);
    job.end(error);
    this.running.delete(job);
    if (!error) {
      const ms = performance.now() - job.startedAt;
      this.avgGenerationMs = 0.8 * this.avgGenerationMs + 0.2 * ms;
    }
    queueMicrotask(() => this.pump());
  }

  private finishQueued(job: GenerationJob, error?: Error): void {
    clearTimeout(job.queueTimer);
    job.state = "finished";
    job.end(error);
  }

  /** Consumer gone or aborted: drop it from the queue, or cancel it in the worker. */
  private abandon(job: GenerationJob): void {
    if (job.state === "queued") {
      this.removeQueued(job);
      this.finishQueued(job);
    } else if (job.state === "running") {
      this.sendCancel(job);
    }
  }

  private sendCancel(job: GenerationJob): void {
    if (job.cancelSent || !job.worker || !job.workerId || !job.worker.alive) return;
    job.cancelSent = true;
    try {
      // The slot stays taken until the worker's done{cancelled}; the idle timer still guards it.
      job.worker.send("cancel", { target: job.workerId }, { onMessage: () => true, onFailure: () => {} });
    } catch {
      // Worker already gone; the job fails through its failure handler.
    }
  }

  private removeQueued(job: GenerationJob): void {
    const i = this.queue.indexOf(job);
    if (i >= 0) this.queue.splice(i, 1);
  }

  private retryAfter(): number {
    const secs = Math.ceil(((this.queue.length + 1) * this.avgGenerationMs) / this.caps.maxConcurrency / 1000);
    return Math.min(60, Math.max(1, secs));
  }

  // ---- worker lifecycle ----

  private ensureWorker(): Promise<WorkerProcess> {
    if (this.stopped) return Promise.reject(new EngineError("engine is not running"));
    if (this.worker && !this.worker.alive) this.retire(this.worker);
    if (this.worker) return Promise.resolve(this.worker);
    if (!this.launching) {
      this.launching = this.launch().finally(() => (this.launching = null));
    }
    return this.launching;
  }

  /** Forgets a dead worker and counts the failure. Idempotent per worker. */
  private retire(w: WorkerProcess): void {
    if (this.worker !== w) return;
    this.worker = null;
    this.retired = w.closed;
    if (this.stopped) return;
    this.failures++;
    this.current = "restarting";
  }

  private async launch(): Promise<WorkerProcess> {
    const isRestart = this.launches++ > 0;
    if (isRestart) {
      this.restarts++;
      this.current = "restarting";
      // The first restart is immediate; back-to-back failures back off exponentially.
      const base = this.opts.restartBackoffMs ?? DEFAULTS.restartBackoffMs;
      const delay = this.failures <= 1 ? 0 : Math.min(MAX_BACKOFF_MS, base * 2 ** (this.failures - 2));
      if (delay) await Bun.sleep(delay);
    } else {
      this.current = "starting";
    }
    let w: WorkerProcess | null = null;
    try {
      await this.retired; // a dead or SIGKILLed worker: quick
      if (this.stopped) throw new EngineError("engine stopped");
      w = await WorkerProcess.start(processOptions(this.opts, this.log, "model worker"));
      const loaded = (await w.request(
        "load",
        loadFields(this.opts),
        this.opts.loadTimeoutMs ?? DEFAULTS.loadTimeoutMs,
      )) as LoadedMessage;
      if (this.stopped) throw new EngineError("engine stopped");
      if (typeof loaded.context_length !== "number") {
        throw new EngineError("worker's loaded reply has no context_length");
      }
      this.info = modelInfoOf(loaded, this.opts);
      this.caps = capabilitiesOf(loaded);
      this.worker = w;
      this.workerStats.reset(w, loaded);
      this.current = "ready";
      const worker = w;
      void worker.closed.then(() => this.onWorkerClosed(worker));
      this.log.info("model worker ready", { pid: w.pid, model: this.info.id, restart: isRestart, ...this.caps });
      queueMicrotask(() => this.pump());
      return w;
    } catch (err) {
      if (w) this.retired = w.stop(1000, 1000);
      const error = err instanceof EngineError ? err : new EngineError(String(err));
      if (!this.stopped) {
        this.failures++;
        this.current = "failed";
        this.log.error("model worker failed to start", { error: error.message.split("\n")[0] });
        // Queued requests fail now; the next request tries again (after the backoff).
        for (const job of this.queue.splice(0)) this.finishQueued(job, error);
      }
      throw error;
    }
  }

  private onWorkerClosed(w: WorkerProcess): void {
    if (this.worker !== w) return;
    this.retire(w);
    if (this.stopped) return;
    this.log.warn("model worker died; restarting", { pid: w.pid });
    this.ensureWorker().catch(() => {});
  }


  // ---- commands ----

  private commandTimeout(): number {
    return this.opts.commandTimeoutMs ?? DEFAULTS.commandTimeoutMs;
  }

  /** A single-reply command; a timeout while no generation runs means the worker hung. */
  private async command(cmd: string, fields: Record<string, unknown>, timeoutMs?: number): Promise<WorkerMessage> {
    const w = await this.ensureWorker();
    try {
      return await w.request(cmd, fields, timeoutMs);
    } catch (err) {
      if (err instanceof EngineTimeoutError && this.running.size === 0 && w.alive) {
        this.log.error(`worker did not answer ${cmd}; killing it`, { pid: w.pid });
        w.kill(`no answer to ${cmd}`);
      }
      throw err;
    }
  }
}
