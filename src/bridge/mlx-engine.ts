/**
 * InferenceEngine backed by the Python MLX worker: a FIFO queue (scheduler.ts) in front of one
 * worker process (worker-supervisor.ts), which may run several generations at once and is
 * restarted when it dies or hangs. Token counts go to a tokenizer-only counter process
 * (token-counter.ts) with a queue of their own.
 */

import { EngineError, EngineTimeoutError } from "../engine/errors";
import type { EngineEvent, EngineState, EngineStats, GenerateRequest, InferenceEngine, ModelInfo, PromptInput } from "../engine/types";
import type { Logger } from "../log";
import type { GenerationJob } from "./generation-job";
import type { MlxEngineOptions } from "./mlx-engine-options";
import { type WorkerMessage, stderrLogger } from "./protocol";
import { GenerationScheduler } from "./scheduler";
import { type WorkerCapabilities, promptFields } from "./worker-info";
import { WorkerStatsCache } from "./worker-stats";
import { WorkerSupervisor } from "./worker-supervisor";

export { type EngineTuning, type MlxEngineOptions, engineTuning } from "./mlx-engine-options";

/**
 * The MLX bridge. As many generations at once as the worker's max_concurrency (batched there),
 * the rest wait in a FIFO queue; token counts run on a counter process of their own.
 */
export class MlxEngine implements InferenceEngine {
  private readonly log: Logger;
  private readonly sup: WorkerSupervisor;
  private readonly sched: GenerationScheduler;
  private readonly workerStats: WorkerStatsCache;

  constructor(private readonly opts: MlxEngineOptions) {
    this.log = opts.logger ?? stderrLogger;
    this.workerStats = new WorkerStatsCache(() => this.commandTimeout(), this.log);
    this.sup = new WorkerSupervisor(opts, this.log, {
      onReady: (w, loaded) => {
        this.workerStats.reset(w, loaded);
        queueMicrotask(() => this.sched.pump());
      },
      onLaunchFailed: (error) => this.sched.failQueued(error),
    });
    this.sched = new GenerationScheduler(opts, this.sup, this.log);
  }

  async start(): Promise<ModelInfo> {
    if (!this.sup.stopped && this.sup.alive && this.sup.info) return this.sup.info;
    this.sup.begin();
    const w = await this.sup.ensureWorker();
    if (!this.sup.info || this.sup.worker !== w) throw new EngineError("engine stopped while starting");
    return this.sup.info;
  }

  model(): ModelInfo | null {
    return this.sup.info;
  }

  state(): EngineState {
    return this.sup.state;
  }

  /** What the loaded worker reported: concurrency, tool calling, thinking. */
  capabilities(): WorkerCapabilities {
    return { ...this.sup.caps };
  }

  async *generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<EngineEvent> {
    if (signal?.aborted) return;
    const job: GenerationJob = this.sched.enqueue(req);
    const onAbort = () => this.sched.abandon(job);
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
      this.sched.abandon(job);
      job.detached = true;
    }
  }

  /** Counted on the token counter process, never in the model worker's generation loop. */
  async countTokens(input: PromptInput): Promise<number> {
    if (this.sup.stopped) throw new EngineError("engine is not running");
    // The counter loads what the worker loaded: a hub model is downloaded by then.
    if (!this.sup.info) await this.sup.ensureWorker();
    return this.sup.counter.count(promptFields(input));
  }

  async clearCache(): Promise<void> {
    if (!this.sup.alive) return;
    // The worker answers clear_cache only after a running generation; its idle timer guards that wait.
    await this.command("clear_cache", {}, this.sched.runningCount ? undefined : this.commandTimeout());
  }

  /** Trims ("trim") or empties ("drop") the worker's prompt-prefix cache; a no-op without a worker. */
  async relieveMemory(level: "trim" | "drop"): Promise<void> {
    if (!this.sup.alive) return;
    await this.command("cache_relieve", { level }, this.commandTimeout());
  }

  /** Answers within statsWaitMs: counts from the engine, the worker's figures as last known (statsAgeMs). */
  async stats(): Promise<EngineStats> {
    const w = this.sup.alive;
    const busyWait = this.opts.statsWaitMs;
    // A worker with no generation answers at once; a loaded machine may still take a moment.
    const wait = this.sched.runningCount ? busyWait : Math.max(busyWait, this.opts.statsIdleWaitMs);
    const reading = await this.workerStats.read(w, wait);
    const view = reading?.view;
    const stats: EngineStats = {
      state: this.sup.state,
      model: this.sup.info,
      queued: this.sched.queued,
      running: this.sched.runningCount,
      mlx: view?.mlx ?? null,
      workerRssGb: view?.rssGb ?? null,
      workerPid: w?.alive ? w.pid : null,
      restarts: this.sup.restarts,
    };
    if (view?.promptCache) stats.promptCache = view.promptCache;
    if (reading) stats.statsAgeMs = reading.ageMs;
    return stats;
  }

  async stop(): Promise<void> {
    this.sup.halt();
    this.sched.shutdown();
    await this.sup.stop();
  }

  // ---- commands ----

  private commandTimeout(): number {
    return this.opts.commandTimeoutMs;
  }

  /** A single-reply command; a timeout while no generation runs means the worker hung. */
  private async command(cmd: string, fields: Record<string, unknown>, timeoutMs?: number): Promise<WorkerMessage> {
    const w = await this.sup.ensureWorker();
    try {
      return await w.request(cmd, fields, timeoutMs);
    } catch (err) {
      if (err instanceof EngineTimeoutError && this.sched.runningCount === 0 && w.alive) {
        this.log.error(`worker did not answer ${cmd}; killing it`, { pid: w.pid });
        w.kill(`no answer to ${cmd}`);
      }
      throw err;
    }
  }
}
