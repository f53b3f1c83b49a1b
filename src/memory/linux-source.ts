import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseByteCount, type MemoryReading, type MemorySource } from "./source";

/** Parse /proc/meminfo into bytes per field ("MemAvailable: 123 kB" -> 125952). */
export function parseMeminfo(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z0-9_()]+):\s+(\d+)(?:\s+kB)?\s*$/.exec(line);
    if (!m) continue;
    // The kernel writes "kB" but means KiB.
    out[m[1]!] = Number(m[2]) * (line.trimEnd().endsWith("kB") ? 1024 : 1);
  }
  return out;
}

/** Available bytes from parsed meminfo: MemAvailable, or a rough free+cache sum on pre-3.14 kernels. */
export function meminfoAvailable(info: Record<string, number>): number {
  if (info.MemAvailable !== undefined) return info.MemAvailable;
  if (info.MemFree === undefined) throw new Error("/proc/meminfo has neither MemAvailable nor MemFree");
  return info.MemFree + (info.Buffers ?? 0) + (info.Cached ?? 0);
}

/** The cgroup v2 path of this process from /proc/self/cgroup ("0::/a/b" -> "/a/b"), or null. */
export function parseCgroupV2Path(text: string): string | null {
  for (const line of text.split("\n")) {
    if (line.startsWith("0::")) return line.slice(3).trim() || "/";
  }
  return null;
}

/** Directories from the process's cgroup up to the mount root, leaf first. */
export function cgroupAncestors(cgroupRoot: string, cgPath: string): string[] {
  const parts = cgPath.split("/").filter(Boolean);
  const dirs: string[] = [];
  for (let i = parts.length; i >= 0; i--) dirs.push(join(cgroupRoot, ...parts.slice(0, i)));
  return dirs;
}

/** Where the Linux source reads from (tests point it at a fake tree). */
export interface LinuxSourceOptions {
  /** Default /proc; tests point it at a fake tree. */
  procRoot?: string;
  /** Where the cgroup v2 hierarchy is mounted. Default /sys/fs/cgroup. */
  cgroupRoot?: string;
}

async function readOptional(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

/**
 * Headroom left under cgroup v2 memory limits: min over the process's cgroup and its ancestors
 * of memory.max - memory.current. "max" means no limit at that level. null when nothing limits.
 */
export async function cgroupAvailable(dirs: string[]): Promise<number | null> {
  let best: number | null = null;
  for (const dir of dirs) {
    const max = await readOptional(join(dir, "memory.max"));
    if (max === null || max.trim() === "max") continue;
    const limit = parseByteCount(max, join(dir, "memory.max"));
    const current = parseByteCount((await readOptional(join(dir, "memory.current"))) ?? "0", join(dir, "memory.current"));
    const room = Math.max(0, limit - current);
    best = best === null ? room : Math.min(best, room);
  }
  return best;
}

/**
 * Linux: MemAvailable from /proc/meminfo, lowered to the cgroup v2 headroom when a limit applies.
 * Hybrid (v1 + v2) hosts mount v2 elsewhere and carry no memory.max there, so no limit is seen.
 */
export function createLinuxSource(opts: LinuxSourceOptions = {}): MemorySource {
  const procRoot = opts.procRoot ?? "/proc";
  const cgroupRoot = opts.cgroupRoot ?? "/sys/fs/cgroup";
  // A process does not change cgroup, so the directories to watch are found once.
  let dirs: Promise<string[]> | null = null;
  const findDirs = async () => {
    const text = await readOptional(join(procRoot, "self", "cgroup"));
    const path = text === null ? null : parseCgroupV2Path(text);
    if (path === null) return [];
    const all = cgroupAncestors(cgroupRoot, path);
    const limited: string[] = [];
    for (const dir of all) if ((await readOptional(join(dir, "memory.max"))) !== null) limited.push(dir);
    return limited;
  };
  return {
    name: "linux /proc/meminfo + cgroup v2",
    injected: false,
    async read(): Promise<MemoryReading> {
      const info = parseMeminfo(await readFile(join(procRoot, "meminfo"), "utf8"));
      const system = meminfoAvailable(info);
      dirs ??= findDirs().catch(() => []);
      const cg = await cgroupAvailable(await dirs);
      if (cg === null) return { availableBytes: system, detail: { meminfoAvailable: system } };
      return { availableBytes: Math.min(system, cg), detail: { meminfoAvailable: system, cgroupAvailable: cg } };
    },
  };
}
