/**
 * The model worker's life: launch (spawn, hello, load), restart with backoff after a crash,
 * retire a dead one. Knows nothing about queues; the scheduler is told when a worker is ready.
 */

import { EngineError } from "../engine/errors";
import type { EngineState, ModelInfo } from "../engine/types";
import type { Logger } from "../log";
import { backoffMs } from "../engine/retry";
import type { MlxEngineOptions } from "./mlx-engine-options";
import { newTokenCounter, processOptions } from "./processes";
import type { LoadedMessage } from "./protocol";
import type { TokenCounter } from "./token-counter";
import { type WorkerCapabilities, capabilitiesOf, loadFields, modelInfoOf } from "./worker-info";
import { WorkerProcess } from "./worker-process";

/** What the supervisor tells its owner. */
export interface SupervisorEvents {
  /** A worker has loaded the model (first start or restart). */
  onReady(w: WorkerProcess, loaded: LoadedMessage): void;
  /** A launch failed while the engine runs; waiting requests should fail with `error`. */
  onLaunchFailed(error: EngineError): void;
}

/** One model worker at a time (plus the token counter), restarted when it dies. */
export class WorkerSupervisor {
  worker: WorkerProcess | null = null;
  info: ModelInfo | null = null;
  caps: WorkerCapabilities = capabilitiesOf({} as LoadedMessage);
  state: EngineState = "stopped";
  stopped = true;
  restarts = 0;
  counter: TokenCounter;
  private launching: Promise<WorkerProcess> | null = null;
  /** Exit of the last retired worker; a new one starts only after it, so two models never share RAM. */
  private retired: Promise<unknown> = Promise.resolve();
  private launches = 0;
  /** Consecutive crashes and failed launches; drives the restart backoff. */
  private failures = 0;

  constructor(
    private readonly opts: MlxEngineOptions,
    private readonly log: Logger,
    private readonly events: SupervisorEvents,
  ) {
    this.counter = newTokenCounter(opts, log);
  }

  /** The live worker, or null. */
  get alive(): WorkerProcess | null {
    return this.worker?.alive ? this.worker : null;
  }

  /** Marks the engine running; a start after stop is not a restart and gets a fresh counter. */
  begin(): void {
    if (this.stopped) {
      this.launches = 0;
      this.counter = newTokenCounter(this.opts, this.log);
    }
    this.stopped = false;
  }

  /** A generation finished normally: the worker is healthy again. */
  succeeded(): void {
    this.failures = 0;
  }

  /** The live worker, launching one (after any backoff) if needed. */
  ensureWorker(): Promise<WorkerProcess> {
    if (this.stopped) return Promise.reject(new EngineError("engine is not running"));
    if (this.worker && !this.worker.alive) this.retire(this.worker);
    if (this.worker) return Promise.resolve(this.worker);
    if (!this.launching) {
      this.launching = this.launch().finally(() => (this.launching = null));
    }
    return this.launching;
  }

  /** Marks the engine stopped at once; no launch starts after this. */
  halt(): void {
    this.stopped = true;
    this.state = "stopped";
  }

  /** Stops the worker and the counter: shutdown, then SIGTERM, then SIGKILL. */
  async stop(): Promise<void> {
    this.halt();
    await this.launching?.catch(() => {});
    const w = this.worker;
    this.worker = null;
    const grace = this.opts.stopGraceMs;
    await Promise.all([w?.stop(grace, grace), this.counter.stop(grace)]);
  }

  /** Forgets a dead worker and counts the failure. Idempotent per worker. */
  private retire(w: WorkerProcess): void {
    if (this.worker !== w) return;
    this.worker = null;
    this.retired = w.closed;
    if (this.stopped) return;
    this.failures++;
    this.state = "restarting";
  }

  private async backoff(): Promise<boolean> {
    const isRestart = this.launches++ > 0;
    if (!isRestart) {
      this.state = "starting";
      return false;
    }
    this.restarts++;
    this.state = "restarting";
    // The first restart is immediate; back-to-back failures back off exponentially.
    const delay = backoffMs(this.failures - 1, this.opts.restartBackoffMs, this.opts.maxBackoffMs);
    if (delay) await Bun.sleep(delay);
    return true;
  }

  private async launch(): Promise<WorkerProcess> {
    const isRestart = await this.backoff();
    let w: WorkerProcess | null = null;
    try {
      await this.retired; // a dead or SIGKILLed worker: quick
      if (this.stopped) throw new EngineError("engine stopped");
      w = await WorkerProcess.start(processOptions(this.opts, this.log, "model worker"));
      const loaded = (await w.request("load", loadFields(this.opts), this.opts.loadTimeoutMs)) as LoadedMessage;
      if (this.stopped) throw new EngineError("engine stopped");
      if (typeof loaded.context_length !== "number") {
        throw new EngineError("worker's loaded reply has no context_length");
      }
      this.info = modelInfoOf(loaded, this.opts);
      this.caps = capabilitiesOf(loaded);
      this.worker = w;
      this.state = "ready";
      const worker = w;
      void worker.closed.then(() => this.onWorkerClosed(worker));
      this.log.info("model worker ready", { pid: w.pid, model: this.info.id, restart: isRestart, ...this.caps });
      this.events.onReady(w, loaded);
      return w;
    } catch (err) {
      if (w) this.retired = w.stop(this.opts.failedLaunchGraceMs, this.opts.failedLaunchGraceMs);
      const error = err instanceof EngineError ? err : new EngineError(String(err));
      if (!this.stopped) {
        this.failures++;
        this.state = "failed";
        this.log.error("model worker failed to start", { error: error.message.split("\n")[0] });
        // Queued requests fail now; the next request tries again (after the backoff).
        this.events.onLaunchFailed(error);
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
}
