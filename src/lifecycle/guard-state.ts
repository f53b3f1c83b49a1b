import { InflightRegistry } from "./inflight";

/** The wording shared by the shutdown 503 and the stream's closing error event. */
export function shuttingDownMessage(reason: string): string {
  return `The server is shutting down: ${reason}.`;
}

/** Where a Ctrl-C/SIGTERM shutdown stands: letting generations finish, then stopping. */
export type ShutdownPhase = "draining" | "stopping";

/** The graceful shutdown as /health shows it. */
export interface ShutdownState {
  phase: ShutdownPhase;
  reason: string;
  /** Epoch ms at which the drain window ends and what is left gets an error. */
  drainDeadline: number;
}

/**
 * Shared by the memory guard, /health and both shutdowns: the accepting flag, the graceful
 * shutdown's phase and the in-flight registry. The entry point makes one and passes it to each.
 */
export class GuardState {
  readonly inflight: InflightRegistry;
  private stopped: string | null = null;
  private graceful: ShutdownState | null = null;

  constructor(inflight: InflightRegistry = new InflightRegistry()) {
    this.inflight = inflight;
  }

  /** Emergency step 2 (and the drain's first step): from now on inference routes answer 503. */
  stopAccepting(reason: string): void {
    this.stopped ??= reason;
  }

  /** Graceful shutdown: refuse new work, let in-flight work run until `drainDeadline`. */
  beginDrain(reason: string, drainDeadline: number): void {
    this.stopAccepting(reason);
    this.graceful ??= { phase: "draining", reason, drainDeadline };
  }

  /** The drain is over (everything finished, the window passed, or a second signal). */
  endDrain(): void {
    if (this.graceful) this.graceful.phase = "stopping";
  }

  /** The graceful shutdown's state, or null while none has begun. */
  shutdown(): Readonly<ShutdownState> | null {
    return this.graceful;
  }

  accepting(): boolean {
    return this.stopped === null;
  }

  stopReason(): string | null {
    return this.stopped;
  }
}
