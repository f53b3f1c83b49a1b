/**
 * The generation queue in front of the model worker: FIFO admission with a bound and a wait
 * limit, dispatch into the worker's free slots, and the idle timer of each running generation.
 */

import { EngineError, EngineOverloadedError, EngineTimeoutError } from "../engine/errors";
import { clampRetryAfter } from "../engine/retry";
import type { GenerateRequest } from "../engine/types";
import type { Logger } from "../log";
import { GenerationJob, generatePayload, toEngineEvent } from "./generation-job";
import type { MlxEngineOptions } from "./mlx-engine-options";
import { type WorkerMessage, engineErrorFromReply } from "./protocol";
import type { WorkerProcess } from "./worker-process";
import type { WorkerSupervisor } from "./worker-supervisor";

/** Queues generations and runs as many at once as the worker's max_concurrency. */
export class GenerationScheduler {
  private readonly queue: GenerationJob[] = [];
  private readonly running = new Set<GenerationJob>();
  // A first guess for retry hints, replaced by measured generations (not a setting).
  private avgGenerationMs = 5000;

  constructor(
    private readonly opts: Pick<MlxEngineOptions, "queueLimit" | "queueTimeoutMs" | "requestTimeoutMs">,
    private readonly sup: WorkerSupervisor,
    private readonly log: Logger,
  ) {}

  get queued(): number {
    return this.queue.length;
  }

  get runningCount(): number {
    return this.running.size;
  }

  /** Admits a request or throws EngineOverloadedError when the queue is full. */
  enqueue(req: GenerateRequest): GenerationJob {
    if (this.sup.stopped) throw new EngineError("engine is not running");
    if (this.queue.length >= this.opts.queueLimit) {
      throw new EngineOverloadedError(`${this.queue.length} requests already waiting for the model`, this.retryAfter());
    }
    const job = new GenerationJob(req);
    const waitMs = this.opts.queueTimeoutMs;
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
  pump(): void {
    if (this.queue.length === 0 || this.sup.stopped) return;
    const w = this.sup.alive;
    if (!w) {
      if (this.running.size) return; // the dying worker's jobs fail first; its close handler restarts
      this.sup.ensureWorker().then(
        () => this.pump(),
        () => {}, // the launch failure already failed the queue
      );
      return;
    }
    while (this.running.size < this.sup.caps.maxConcurrency && this.queue.length > 0) {
      this.dispatch(this.queue.shift() as GenerationJob, w);
    }
  }

  /** Fails every queued job with `error`. */
  failQueued(error: Error): void {
    for (const job of this.queue.splice(0)) this.finishQueued(job, error);
  }

  /** Engine stopping: queued jobs fail, running ones are cancelled in the worker. */
  shutdown(): void {
    this.failQueued(new EngineError("engine stopped"));
    for (const job of this.running) this.sendCancel(job);
  }

  /** Consumer gone or aborted: drop it from the queue, or cancel it in the worker. */
  abandon(job: GenerationJob): void {
    if (job.state === "queued") {
      this.removeQueued(job);
      this.finishQueued(job);
    } else if (job.state === "running") {
      this.sendCancel(job);
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
      this.log.debug("ignoring unknown worker message", { type: msg.type });
      return false;
    }
    job.deliver(ev);
    if (ev.type !== "done") return false;
    this.sup.succeeded();
    this.finishRunning(job);
    return true;
  }

  /** A running generation with no worker event for requestTimeoutMs: fail it and replace the worker. */
  private armIdleTimer(job: GenerationJob): void {
    clearTimeout(job.idleTimer);
    const ms = this.opts.requestTimeoutMs;
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
    return clampRetryAfter(((this.queue.length + 1) * this.avgGenerationMs) / this.sup.caps.maxConcurrency / 1000);
  }
}
