import type { ModelInfo } from "../engine/types";
import { BYTES_PER_GB, classify, severity } from "./levels";
import type { MemoryMonitor, MemoryStatus } from "./types";

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

/** KV-cache bytes a request may need: (prompt + output cap) tokens, capped at the context. */
export function estimateKvBytes(promptTokens: number, maxTokens: number, model: Pick<ModelInfo, "kvBytesPerToken" | "contextLength">): number {
  let tokens = Math.max(0, promptTokens) + Math.max(0, maxTokens);
  if (model.contextLength > 0) tokens = Math.min(tokens, model.contextLength);
  return tokens * Math.max(0, model.kvBytesPerToken);
}

/** Why admission refused: the request's KV estimate against what is available. */
export interface AdmissionRefusal {
  needGb: number;
  availableGb: number;
  criticalGb: number;
}

/**
 * Admission: would `estimateBytes` more memory push availability into Critical or worse?
 * Returns the figures for the refusal, or null to proceed.
 * With no sample yet the gate's own stale rule applies, so this admits.
 */
export function admit(monitor: MemoryMonitor, estimateBytes: number): AdmissionRefusal | null {
  const available = monitor.availableGb();
  if (!Number.isFinite(available) || estimateBytes <= 0) return null;
  const t = monitor.thresholds();
  const after = available - estimateBytes / BYTES_PER_GB;
  if (severity(classify(after, t)) < severity("critical")) return null;
  return { needGb: estimateBytes / BYTES_PER_GB, availableGb: available, criticalGb: t.critical };
}

/** Cheap pre-check: can even a full-context request fit above Critical? Then no estimate is needed. */
export function fitsWholeContext(monitor: MemoryMonitor, model: Pick<ModelInfo, "kvBytesPerToken" | "contextLength">): boolean {
  const available = monitor.availableGb();
  if (!Number.isFinite(available) || model.contextLength <= 0) return false;
  const worst = (model.contextLength * model.kvBytesPerToken) / BYTES_PER_GB;
  return severity(classify(available - worst, monitor.thresholds())) < severity("critical");
}
