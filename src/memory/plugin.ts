import { Elysia, sse } from "elysia";
import { ServiceUnavailableError, mapError, newRequestId, type HttpError } from "../anthropic/errors";
import { errorEvent } from "../anthropic/stream";
import type { ModelInfo } from "../engine/types";
import { requestIdOf } from "../http/request-id";
import type { InflightEntry } from "../lifecycle/inflight";
import { createLogger, type Logger } from "../log";
import {
  DEFAULT_MEMORY_RETRY_AFTER_SECONDS,
  admit,
  emergencyMemoryError,
  estimateKvBytes,
  estimatePromptTokens,
  fitsWholeContext,
  gateAction,
  guardStateFor,
  lowMemoryError,
  shuttingDownError,
  shuttingDownMessage,
  type GuardState,
} from "./gate";
import { formatGb } from "./levels";
import type { MemoryMonitor } from "./types";

/** Options for the memory guard plugin. */
export interface MemoryGuardOptions {
  monitor: MemoryMonitor;
  /** Called when the gate sees Emergency; starts the emergency shutdown (which must be idempotent). */
  onEmergency?: (reason: string) => void;
  /** Accepting flag + in-flight registry. Default: the one bound to `monitor` (guardStateFor). */
  state?: GuardState;
  /** Which requests the gate covers. Default: every POST under /v1/ (messages, count_tokens, ...). */
  isInference?: (method: string, path: string) => boolean;
  /** retry-after on memory 503s, capped at 60. Default 10. */
  retryAfterSeconds?: number;
  log?: Logger;
  /** The served model, enabling body-based admission (estimated KV cache vs. the Critical level). */
  model?: () => Pick<ModelInfo, "kvBytesPerToken" | "contextLength"> | null;
}

export const MEMORY_STATUS_HEADER = "x-memory-status";
export const AVAILABLE_GB_HEADER = "x-available-memory-gb";

/** Default gate coverage: every inference call is a POST under /v1/ (GET /v1/models stays open). */
export function isInferenceRoute(method: string, path: string): boolean {
  return method === "POST" && path.startsWith("/v1/");
}

// Request -> its in-flight entry; lets routes find their abort signal without extra plumbing.
const entries = new WeakMap<Request, InflightEntry>();
// Entries whose handler returned a generator: they leave the registry when it ends.
const wrapped = new WeakSet<InflightEntry>();

/** Aborted when the emergency shutdown ends open work; routes may pass it to the engine. */
export function emergencySignalOf(request: Request): AbortSignal | undefined {
  return entries.get(request)?.controller.signal;
}

function isAsyncGenerator(v: unknown): v is AsyncGenerator<unknown, unknown, unknown> {
  return !!v && typeof (v as AsyncGenerator).next === "function" && typeof (v as AsyncGenerator)[Symbol.asyncIterator] === "function";
}

// Pass a handler's generator through; when the emergency shutdown aborts the entry, end an
// SSE stream with one `event: error` (or fail with a 503 if nothing was sent yet), so clients
// see an error instead of a hang. Unregisters when done.
async function* guardStream(inner: AsyncGenerator<unknown>, entry: InflightEntry, done: () => void, requestId: string) {
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
        if (isSse === null) throw new ServiceUnavailableError(reason, DEFAULT_MEMORY_RETRY_AFTER_SECONDS);
        if (isSse) yield sse(errorEvent("overloaded_error", reason, requestId));
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
 * in-flight registry. Register it early in the app so its global hooks cover every route.
 */
export function memoryGuard(opts: MemoryGuardOptions) {
  const { monitor } = opts;
  const state = opts.state ?? guardStateFor(monitor);
  const isInference = opts.isInference ?? isInferenceRoute;
  const retryAfter = opts.retryAfterSeconds ?? DEFAULT_MEMORY_RETRY_AFTER_SECONDS;
  const log = opts.log ?? createLogger();

  const refuse = (set: { status?: number | string; headers: Record<string, unknown> }, err: HttpError) => {
    const { status, body, headers } = mapError(err, requestIdOf(set));
    set.status = status;
    Object.assign(set.headers, headers);
    return body;
  };

  return new Elysia({ name: "pensieve.memory" })
    .onRequest(({ set }) => {
      // Two header writes from the last sample: no syscall, no allocation beyond the strings.
      set.headers[MEMORY_STATUS_HEADER] = monitor.checkStatus();
      set.headers[AVAILABLE_GB_HEADER] = formatGb(monitor.availableGb());
    })
    .onBeforeHandle({ as: "global" }, ({ request, path, set, body }) => {
      if (!isInference(request.method, path)) return;
      const stopReason = state.stopReason();
      if (stopReason !== null) return refuse(set, shuttingDownError(stopReason, retryAfter));
      const status = monitor.checkStatus();
      const available = monitor.availableGb();
      const requestId = requestIdOf(set) ?? newRequestId();
      switch (gateAction(status)) {
        case "emergency": {
          const err = emergencyMemoryError(available, retryAfter);
          log.error("memory gate: Emergency, refusing and starting the emergency shutdown", { requestId, availableGb: available });
          opts.onEmergency?.(`memory emergency seen by the gate: ${formatGb(available)} GB available`);
          return refuse(set, err);
        }
        case "reject":
          log.warn("memory gate: Critical, refusing with 503", { requestId, availableGb: available, path });
          return refuse(set, lowMemoryError(available, monitor.thresholds().critical, retryAfter));
        case "warn":
          log.warn("memory gate: Warning, serving", { requestId, availableGb: available, path });
          break;
        case "serve":
          break;
      }
      const model = opts.model?.();
      const maxTokens = (body as { max_tokens?: unknown } | undefined)?.max_tokens;
      // Only generation builds a KV cache; count_tokens never does.
      if (model && typeof maxTokens === "number" && !path.endsWith("/count_tokens") && !fitsWholeContext(monitor, model)) {
        const err = admit(monitor, estimateKvBytes(estimatePromptTokens(body), maxTokens, model), retryAfter);
        if (err) {
          log.warn("memory admission: refusing a request that would push memory into Critical", { requestId, availableGb: available });
          return refuse(set, err);
        }
      }
      entries.set(request, state.inflight.register(requestId, `${request.method} ${path}`));
    })
    .onAfterHandle({ as: "global" }, ({ request, responseValue, set }) => {
      const entry = entries.get(request);
      if (!entry || !isAsyncGenerator(responseValue)) return;
      wrapped.add(entry);
      return guardStream(responseValue, entry, () => state.inflight.unregister(entry), requestIdOf(set) ?? entry.id) as never;
    })
    .onAfterResponse({ as: "global" }, ({ request }) => {
      const entry = entries.get(request);
      // Generators unregister when they end; everything else is done once the response is out.
      if (entry && !wrapped.has(entry)) state.inflight.unregister(entry);
    })
    .as("global");
}
