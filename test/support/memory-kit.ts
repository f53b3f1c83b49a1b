/**
 * Test helpers for the memory-safety work: a scripted MemorySource, a manual clock and a
 * recording Logger. They implement the real interfaces (MemorySource, Logger).
 */
import type { Logger } from "../../src/log";
import { BYTES_PER_GB } from "../../src/memory/levels";
import type { MemoryPressure, MemoryReading, MemorySource } from "../../src/memory/source";

/** One scripted read: GB available, a full reading, or an error to throw. */
export type ScriptedRead = number | MemoryReading | Error;

/**
 * A MemorySource that answers from a queue; once the queue is empty it repeats `steady`
 * (set with `set`). Counts its reads.
 */
export class ScriptedSource implements MemorySource {
  readonly name = "scripted";
  readonly injected = true;
  reads = 0;
  private queue: ScriptedRead[] = [];
  private steady: ScriptedRead;

  constructor(initialGb = 8) {
    this.steady = initialGb;
  }

  /** The value every later read returns (after anything queued). */
  set(value: ScriptedRead): void {
    this.steady = value;
  }

  /** Values for the next reads, in order. */
  queueReads(...values: ScriptedRead[]): void {
    this.queue.push(...values);
  }

  async read(): Promise<MemoryReading> {
    this.reads += 1;
    const v = this.queue.length ? this.queue.shift()! : this.steady;
    if (v instanceof Error) throw v;
    if (typeof v === "number") return { availableBytes: Math.round(v * BYTES_PER_GB) };
    return v;
  }
}

/** A reading with kernel pressure, in GB. */
export function withPressure(gb: number, pressure: MemoryPressure): MemoryReading {
  return { availableBytes: Math.round(gb * BYTES_PER_GB), pressure };
}

/** A monotonic clock the test moves by hand. */
export class ManualClock {
  constructor(public t = 1_000) {}
  now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

export interface LogLine {
  level: "debug" | "info" | "warn" | "error";
  msg: string;
  fields?: Record<string, unknown>;
}

/** A Logger that keeps its lines for assertions. */
export class RecordingLogger implements Logger {
  readonly lines: LogLine[] = [];
  debug = (msg: string, fields?: Record<string, unknown>) => this.push("debug", msg, fields);
  info = (msg: string, fields?: Record<string, unknown>) => this.push("info", msg, fields);
  warn = (msg: string, fields?: Record<string, unknown>) => this.push("warn", msg, fields);
  error = (msg: string, fields?: Record<string, unknown>) => this.push("error", msg, fields);

  private push(level: LogLine["level"], msg: string, fields?: Record<string, unknown>) {
    this.lines.push(fields ? { level, msg, fields } : { level, msg });
  }

  at(level: LogLine["level"]): LogLine[] {
    return this.lines.filter((l) => l.level === level);
  }

  /** Everything logged, as one string (for "never contains" checks). */
  text(): string {
    return JSON.stringify(this.lines);
  }
}
