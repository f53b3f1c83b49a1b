/**
 * The memory guard: an HTTP plugin that knows no API. The app tells it how to size a request
 * (estimate) and how to end a stream with an error (streamError).
 */
import { Elysia } from "elysia";
import type { ModelInfo } from "../engine/types";
import type { InflightEntry } from "../lifecycle/inflight";
import { shuttingDownMessage, type GuardState } from "../lifecycle/guard-state";
import { createLogger, type Logger } from "../log";
import { admit, estimateKvBytes, fitsWholeContext, gateAction } from "../memory/gate";
import { formatGb as gb, formatGb } from "../memory/levels";
import type { MemoryMonitor } from "../memory/types";
import { ServiceUnavailableError } from "./errors";
import type { RequestScope } from "./request-scope";

/** The 503 for Critical: names memory and the GB available. */
export function lowMemoryError(availableGb: number, criticalGb: number, retryAfterSeconds: number) {
  return new ServiceUnavailableError(
    `Server memory is low: ${gb(availableGb)} GB available (critical at or below ${criticalGb} GB). Retry shortly.`,
    retryAfterSeconds,
  );
}

/** The 503 for Emergency: the server is about to shut down. */
export function emergencyMemoryError(availableGb: number, retryAfterSeconds: number) {
  return new ServiceUnavailableError(
    `Server memory emergency: ${gb(availableGb)} GB available. The server is shutting down to protect the machine.`,
    retryAfterSeconds,
  );
}

/** The 503 once a shutdown has stopped accepting work. */
export function shuttingDownError(reason: string, retryAfterSeconds: number) {
  return new ServiceUnavailableError(shuttingDownMessage(reason), retryAfterSeconds);
}

/** The 503 for a request whose KV cache would push memory into Critical; `hint` ends the message. */
export function admissionError(needGb: number, availableGb: number, criticalGb: number, hint: string, retryAfterSeconds: number) {
  return new ServiceUnavailableError(
    `Not enough memory for this request: it may need ${gb(needGb)} GB of KV cache and the server has ` +
      `${gb(availableGb)} GB available, which would leave it at or below the ${criticalGb} GB critical level. ${hint}`,
    retryAfterSeconds,
  );
}

/** What a request will ask of the KV cache, as the API layer reads it from the body. */
export interface KvDemand {
  promptTokens: number;
  maxTokens: number;
}

/** Options for the memory guard plugin. */
export interface MemoryGuardOptions {
  monitor: MemoryMonitor;
  /** Accepting flag, drain state and in-flight registry, shared with /health and both shutdowns. */
  state: GuardState;
  /** The app's request scope: the guard reads `requestId` and fills `work`. */
  scope: RequestScope;
  /** Called when the gate sees Emergency; starts the emergency shutdown (which must be idempotent). */
  onEmergency?: (reason: string) => void;
  /** Which requests the gate covers. Default: every POST under /v1/. */
  isInference?: (method: string, path: string) => boolean;
  /** retry-after on memory and shutdown 503s, capped at 60 (src/config.ts httpDefaults). */
  retryAfterSeconds: number;
  log?: Logger;
  /** The served model, enabling admission (estimated KV cache vs. the Critical level). */
  model?: () => Pick<ModelInfo, "kvBytesPerToken" | "contextLength"> | null;
  /** A request's KV demand from its parsed body, or null when it builds no KV cache. */
  estimate?: (body: unknown, path: string) => KvDemand | null;
  /** Ends the admission refusal's message (the app names its own field). Default "Retry later." */
  admissionHint?: string;
  /** The value a stream yields to end with an error when a shutdown aborts it (e.g. an SSE event). */
  streamError?: (reason: string, requestId: string) => unknown;
}

export const MEMORY_STATUS_HEADER = "x-memory-status";
export const AVAILABLE_GB_HEADER = "x-available-memory-gb";

/** Default gate coverage: every inference call is a POST under /v1/ (GET /v1/models stays open). */
export function isInferenceRoute(method: string, path: string): boolean {
  return method === "POST" && path.startsWith("/v1/");
}

function isAsyncGenerator(v: unknown): v is AsyncGenerator<unknown, unknown, unknown> {
  return !!v && typeof (v as AsyncGenerator).next === "function" && typeof (v as AsyncGenerator)[Symbol.asyncIterator] === "function";
}

// Pass a handler's generator through; when a shutdown aborts the entry, end an SSE stream with
// the app's error value (or fail with a 503 if nothing was sent yet), so clients see an error
// instead of a hang. Unregisters when done.
async function* guardStream(
  inner: AsyncGenerator<unknown>,
  entry: InflightEntry,
  done: () => void,
  streamError: ((reason: string) => unknown) | undefined,
  retryAfterSeconds: number,
) {
  const signal = entry.controller.signal;
  const aborted = new Promise<"aborted">((resolve) => {
    if (signal.aborted) resolve("aborted");
    else signal.addEventListener("abort", () => resolve("aborted"), { once: true });
  });
  let isSse: boolean | null = null;
  try {
    for (;;) {
      const next = inner.next();
      const r = await Promise.race([next, aborted]);
      if (r === "aborted") {
        next.catch(() => {}); // the route settles later (or never); nobody waits for it
        const reason = signal.reason instanceof Error ? signal.reason.message : shuttingDownMessage("memory emergency");
        // Nothing sent yet: fail as a plain 503 (JSON requests run as generators too).
        if (isSse === null) throw new ServiceUnavailableError(reason, retryAfterSeconds);
        if (isSse && streamError) yield streamError(reason);
        return undefined;
      }
      // Keep the return value: a non-streaming handler written as a generator returns its body.
      if (r.done) return r.value;
      if (isSse === null) entry.streaming = isSse = !!(r.value as { sse?: unknown } | null)?.sse;
      yield r.value;
    }
  } finally {
    done();
    // Let the route's own finally run (engine cancel); don't wait, it may be mid-await.
    inner.return(undefined).catch(() => {});
  }
}

/**
 * Memory guard: `X-Memory-Status` / `X-Available-Memory-GB` on every response, the gate in
 * front of inference routes (503 at Critical, shutdown at Emergency), admission, and the
 * in-flight registry (the entry goes to `ctx.work`). Refusals are thrown; the app's onError renders them.
 */
export function memoryGuard(opts: MemoryGuardOptions) {
  const { monitor, state } = opts;
  const isInference = opts.isInference ?? isInferenceRoute;
  const retryAfter = opts.retryAfterSeconds;
  const hint = opts.admissionHint ?? "Retry later.";
  const log = opts.log ?? createLogger();
  // Entries whose handler returned a generator: they leave the registry when it ends.
  const wrapped = new WeakSet<InflightEntry>();

  return new Elysia({ name: "pensieve.memory" })
    .use(opts.scope)
    .onRequest(({ set }) => {
      // Two header writes from the last sample: no syscall, no allocation beyond the strings.
      set.headers[MEMORY_STATUS_HEADER] = monitor.checkStatus();
      set.headers[AVAILABLE_GB_HEADER] = formatGb(monitor.availableGb());
    })
    .onBeforeHandle((ctx) => {
      const { request, path, body, requestId } = ctx;
      if (!isInference(request.method, path)) return;
      const stopReason = state.stopReason();
      if (stopReason !== null) throw shuttingDownError(stopReason, retryAfter);
      const status = monitor.checkStatus();
      const available = monitor.availableGb();
      switch (gateAction(status)) {
        case "emergency": {
          const err = emergencyMemoryError(available, retryAfter);
          log.error("memory gate: Emergency, refusing and starting the emergency shutdown", { requestId, availableGb: available });
          opts.onEmergency?.(`memory emergency seen by the gate: ${formatGb(available)} GB available`);
          throw err;
        }
        case "reject":
          log.warn("memory gate: Critical, refusing with 503", { requestId, availableGb: available, path });
          throw lowMemoryError(available, monitor.thresholds().critical, retryAfter);
        case "warn":
          log.warn("memory gate: Warning, serving", { requestId, availableGb: available, path });
          break;
        case "serve":
          break;
      }
      const model = opts.model?.();
      if (model && opts.estimate && !fitsWholeContext(monitor, model)) {
        const demand = opts.estimate(body, path);
        const refusal = demand && admit(monitor, estimateKvBytes(demand.promptTokens, demand.maxTokens, model));
        if (refusal) {
          log.warn("memory admission: refusing a request that would push memory into Critical", { requestId, availableGb: available });
          throw admissionError(refusal.needGb, refusal.availableGb, refusal.criticalGb, hint, retryAfter);
        }
      }
      ctx.work = state.inflight.register(requestId, `${request.method} ${path}`);
    })
    .onAfterHandle(({ work, responseValue, requestId }) => {
      if (!work || !isAsyncGenerator(responseValue)) return;
      wrapped.add(work);
      const streamError = opts.streamError && ((reason: string) => opts.streamError!(reason, requestId || work.id));
      return guardStream(responseValue, work, () => state.inflight.unregister(work), streamError, retryAfter) as never;
    })
    .onAfterResponse(({ work }) => {
      // Generators unregister when they end; everything else is done once the response is out.
      if (work && !wrapped.has(work)) state.inflight.unregister(work);
    })
    .as("scoped");
}
