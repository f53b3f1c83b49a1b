import { ServiceUnavailableError } from "../anthropic/errors";
import type { ModelInfo } from "../engine/types";
import { InflightRegistry } from "../lifecycle/inflight";
import { BYTES_PER_GB, classify, formatGb as gb, severity } from "./levels";
import type { MemoryMonitor, MemoryStatus } from "./types";

/** Default retry hint for memory refusals; memory rarely frees up in under a few seconds. */
export const DEFAULT_MEMORY_RETRY_AFTER_SECONDS = 10;

/** What the gate does for one inference request at a given status. */
export type GateAction = "serve" | "warn" | "reject" | "emergency";

/** Safe/Caution serve; Warning serves with a log line; Critical rejects; Emergency rejects and shuts down. */
export function gateAction(status: MemoryStatus): GateAction {
  switch (status) {
    case "safe":
    case "caution":
      return "serve";
    case "warning":
      return "warn";
    case "critical":
      return "reject";
    case "emergency":
      return "emergency";
  }
}

/** The 503 for Critical: names memory and the GB available. */
export function lowMemoryError(availableGb: number, criticalGb: number, retryAfterSeconds = DEFAULT_MEMORY_RETRY_AFTER_SECONDS) {
  return new ServiceUnavailableError(
    `Server memory is low: ${gb(availableGb)} GB available (critical at or below ${criticalGb} GB). Retry shortly.`,
    retryAfterSeconds,
  );
}

/** The 503 for Emergency: the server is about to shut down. */
export function emergencyMemoryError(availableGb: number, retryAfterSeconds = DEFAULT_MEMORY_RETRY_AFTER_SECONDS) {
  return new ServiceUnavailableError(
    `Server memory emergency: ${gb(availableGb)} GB available. The server is shutting down to protect the machine.`,
    retryAfterSeconds,
  );
}

/** The wording shared by the shutdown 503 and the stream's closing `event: error`. */
export function shuttingDownMessage(reason: string): string {
  return `The server is shutting down: ${reason}.`;
}

/** The 503 once the emergency shutdown has stopped accepting work. */
export function shuttingDownError(reason: string, retryAfterSeconds = DEFAULT_MEMORY_RETRY_AFTER_SECONDS) {
  return new ServiceUnavailableError(shuttingDownMessage(reason), retryAfterSeconds);
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
 * Shared by the guard plugin, /health and both shutdowns: the accepting flag, the graceful
 * shutdown's phase and the in-flight registry. One per monitor unless passed explicitly.
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

const states = new WeakMap<MemoryMonitor, GuardState>();

/** The GuardState bound to a monitor (created on first use), so main.ts and the plugin share it. */
export function guardStateFor(monitor: MemoryMonitor): GuardState {
  let s = states.get(monitor);
  if (!s) {
    s = new GuardState();
    states.set(monitor, s);
  }
  return s;
}

/** KV-cache bytes a request may need: (prompt + max_tokens) tokens, capped at the context. */
export function estimateKvBytes(promptTokens: number, maxTokens: number, model: Pick<ModelInfo, "kvBytesPerToken" | "contextLength">): number {
  let tokens = Math.max(0, promptTokens) + Math.max(0, maxTokens);
  if (model.contextLength > 0) tokens = Math.min(tokens, model.contextLength);
  return tokens * Math.max(0, model.kvBytesPerToken);
}

/**
 * Rough prompt tokens from a Messages body, before tokenizing: text characters / 3.
 * Deliberately high (code and JSON run near 3 chars per token) so admission errs on the safe side.
 */
export function estimatePromptTokens(body: unknown): number {
  if (!body || typeof body !== "object") return 0;
  const b = body as Record<string, unknown>;
  let chars = 0;
  const walk = (v: unknown): void => {
    if (typeof v === "string") chars += v.length;
    else if (Array.isArray(v)) for (const x of v) walk(x);
    else if (v && typeof v === "object") for (const x of Object.values(v)) walk(x);
  };
  walk(b.system);
  walk(b.messages);
  walk(b.tools);
  return Math.ceil(chars / 3);
}

/**
 * Admission: would `estimateBytes` more memory push availability into Critical or worse?
 * Returns the 503 error to throw (the app's onError renders it), or null to proceed.
 * With no sample yet the gate's own stale rule applies, so this admits.
 */
export function admit(monitor: MemoryMonitor, estimateBytes: number, retryAfterSeconds = DEFAULT_MEMORY_RETRY_AFTER_SECONDS): ServiceUnavailableError | null {
  const available = monitor.availableGb();
  if (!Number.isFinite(available) || estimateBytes <= 0) return null;
  const t = monitor.thresholds();
  const after = available - estimateBytes / BYTES_PER_GB;
  if (severity(classify(after, t)) < severity("critical")) return null;
  return new ServiceUnavailableError(
    `Not enough memory for this request: it may need ${gb(estimateBytes / BYTES_PER_GB)} GB of KV cache and the server has ` +
      `${gb(available)} GB available, which would leave it at or below the ${t.critical} GB critical level. ` +
      `Retry later, or lower max_tokens.`,
    retryAfterSeconds,
  );
}

/** Cheap pre-check: can even a full-context request fit above Critical? Then no estimate is needed. */
export function fitsWholeContext(monitor: MemoryMonitor, model: Pick<ModelInfo, "kvBytesPerToken" | "contextLength">): boolean {
  const available = monitor.availableGb();
  if (!Number.isFinite(available) || model.contextLength <= 0) return false;
  const worst = (model.contextLength * model.kvBytesPerToken) / BYTES_PER_GB;
  return severity(classify(available - worst, monitor.thresholds())) < severity("critical");
}
