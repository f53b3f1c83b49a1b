import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { EngineStats } from "../engine/types";
import type { MemoryThresholds } from "../memory/types";
import type { InflightSnapshot } from "./inflight";

/** One memory sample as logged (a MemorySample plus a readable time). */
export interface LoggedSample {
  time: string;
  available_gb: number;
  available_bytes: number;
  raw: string;
  status: string;
  pressure?: string;
  confirmation?: boolean;
  detail?: Record<string, number>;
}

/** How one shutdown step went. */
export interface StepOutcome {
  step: string;
  ok: boolean;
  ms: number;
  error?: string;
}

/**
 * The emergency log's JSON. Holds figures, ids and ages only: never prompt text,
 * generated text or tokens.
 */
export interface EmergencyRecord {
  time: string;
  reason: string;
  pid: number;
  uptime_s: number;
  memory: { source: string | null; thresholds_gb: MemoryThresholds | null; samples: LoggedSample[] };
  in_flight: { id: string; route: string; age_ms: number; streaming: boolean }[];
  drained: boolean | null;
  aborted_streams: number;
  bridge: { stats: EngineStats | null; error?: string };
  steps: StepOutcome[];
}

/** `pensieve-emergency-<timestamp>.log`, with a filename-safe ISO timestamp. */
export function emergencyLogName(at: Date): string {
  return `pensieve-emergency-${at.toISOString().replace(/[:.]/g, "-")}.log`;
}

/** Map in-flight snapshots to the log's snake_case shape. */
export function loggedInflight(list: InflightSnapshot[]): EmergencyRecord["in_flight"] {
  return list.map((e) => ({ id: e.id, route: e.route, age_ms: Math.round(e.ageMs), streaming: e.streaming }));
}

/** Write the record as pretty JSON into `dir` (created if missing); resolves to the file's path. */
export async function writeEmergencyLog(dir: string, record: EmergencyRecord, at: Date): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, emergencyLogName(at));
  await writeFile(path, JSON.stringify(record, null, 2) + "\n", { mode: 0o600 });
  return path;
}
