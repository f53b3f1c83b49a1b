/**
 * The Ctrl-C/SIGTERM shutdown: stop accepting, let running generations finish within the drain
 * window, end what is left with a retryable error, stop, exit 0. It reuses the in-flight
 * registry the emergency shutdown drains (waitForDrain/abortAll) and the guard's abort path,
 * which ends a stream with a retryable error event, or answers 503 before the first byte.
 */
import type { Logger } from "../log";
import { shuttingDownMessage, type GuardState } from "./guard-state";

/** What the graceful shutdown touches, injected so it is testable in process. */
export interface GracefulDeps {
  log: Pick<Logger, "info" | "warn">;
  /** The guard's state: its in-flight registry is what the drain waits for. */
  state: Pick<GuardState, "beginDrain" | "endDrain" | "inflight">;
  /** --shutdown-drain-ms: how long running generations may take to finish. */
  drainMs: number;
  /** After ending what is left, how long its error events get to be written (src/config.ts shutdownDefaults). */
  flushMs: number;
  /** Stops the server, background work and the engine; a failure is logged, the exit still comes. */
  stop: () => Promise<void>;
  /** Default process.exit. */
  exit?: (code: number) => void;
  now?: () => number;
}

/** The signal handler's side of the shutdown. */
export interface GracefulShutdown {
  /** First call starts the drain; a call during the drain ends it at once. Resolves after exit. */
  signal(name: string): Promise<void>;
  /** "serving", "draining" (waiting for generations) or "stopping". */
  phase(): "serving" | "draining" | "stopping";
}

/** Builds the graceful shutdown; nothing happens until signal(). */
export function createGracefulShutdown(deps: GracefulDeps): GracefulShutdown {
  const now = deps.now ?? Date.now;
  const exit = deps.exit ?? ((code: number) => process.exit(code));
  const { inflight } = deps.state;
  let phase: "serving" | "draining" | "stopping" = "serving";
  let running: Promise<void> | null = null;
  let cutShort: ((signal: string) => void) | null = null;

  // Resolves null once everything finished or the window passed; a signal name if one ended it.
  const drain = (): Promise<string | null> =>
    Promise.race([
      inflight.waitForDrain(deps.drainMs).then(() => null),
      new Promise<string>((resolve) => (cutShort = resolve)),
    ]);

  const run = async (first: string) => {
    try {
      deps.state.beginDrain(first, now() + deps.drainMs);
      deps.log.info(`${first}: shutting down; new requests get 503 (send it again to stop at once)`, { inFlight: inflight.count(), drainMs: deps.drainMs });
      const early = inflight.count() > 0 ? await drain() : null;
      phase = "stopping";
      deps.state.endDrain();
      if (inflight.count() > 0) {
        const why = early ? `a second ${early} ended the drain` : `the generation did not finish within the ${deps.drainMs} ms drain window`;
        // Never a truncated answer marked complete: streams get event: error, the rest a 503.
        const n = inflight.abortAll(new Error(shuttingDownMessage(`${first}, and ${why}; retry the request`)));
        deps.log.warn(`shutdown: ending ${n} unfinished request(s) with a retryable error`, { reason: why });
        await inflight.waitForDrain(deps.flushMs);
      }
      await deps.stop().catch((e: unknown) => deps.log.warn("shutdown: stop failed", { error: String(e) }));
    } finally {
      exit(0);
    }
  };

  return {
    signal(name: string) {
      if (running) {
        if (phase === "draining") cutShort?.(name);
        return running;
      }
      phase = "draining";
      running = run(name);
      return running;
    },
    phase: () => phase,
  };
}
