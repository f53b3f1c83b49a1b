import { readFile } from "node:fs/promises";

/** Kernel memory-pressure level (macOS); Linux sources leave it out. */
export type MemoryPressure = "normal" | "warn" | "critical";

/** One raw reading from a memory source. */
export interface MemoryReading {
  availableBytes: number;
  pressure?: MemoryPressure;
  /** Extra figures for the emergency log (e.g. meminfo vs cgroup); bytes. */
  detail?: Record<string, number>;
}

/**
 * Where memory figures come from. `read()` may reject; the monitor catches, logs and keeps
 * the previous sample. Reads run in the background sampler only, never per request.
 */
export interface MemorySource {
  /** Human description for the startup line and the emergency log, e.g. "linux /proc/meminfo". */
  readonly name: string;
  /** True when the source was injected (file:PATH) rather than the OS's own figure. */
  readonly injected: boolean;
  read(): Promise<MemoryReading>;
  /** Release long-lived resources, if any. */
  close?(): void;
}

/** Parse a non-negative integer byte count; throws on anything else. */
export function parseByteCount(text: string, where: string): number {
  const s = text.trim();
  if (!/^\d+$/.test(s)) throw new Error(`${where}: expected a non-negative integer byte count, got ${JSON.stringify(s.slice(0, 40))}`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new Error(`${where}: byte count out of range`);
  return n;
}

/** `file:PATH`: the available bytes, as an integer, re-read from PATH on every sample. */
export function createFileSource(path: string): MemorySource {
  return {
    name: `file:${path}`,
    injected: true,
    async read() {
      return { availableBytes: parseByteCount(await readFile(path, "utf8"), path) };
    },
  };
}
