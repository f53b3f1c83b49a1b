import { createDarwinSource } from "./darwin-source";
import { createLinuxSource, type LinuxSourceOptions } from "./linux-source";
import { createFileSource, type MemorySource } from "./source";

/**
 * Build a source from a `--memory-source` spec: undefined/"" or "auto" (the OS's own figure),
 * "linux", "darwin", or "file:PATH" (injected, for tests and drills).
 */
export function createMemorySource(spec?: string, opts: { linux?: LinuxSourceOptions; platform?: NodeJS.Platform } = {}): MemorySource {
  const s = spec?.trim() ?? "";
  if (s.startsWith("file:")) {
    const path = s.slice("file:".length);
    if (!path) throw new RangeError("--memory-source file:PATH needs a path");
    return createFileSource(path);
  }
  const kind = s === "" || s === "auto" ? (opts.platform ?? process.platform) : s;
  if (kind === "linux") return createLinuxSource(opts.linux);
  if (kind === "darwin") return createDarwinSource();
  throw new RangeError(`unsupported memory source '${s || kind}': use auto, linux, darwin or file:PATH`);
}
