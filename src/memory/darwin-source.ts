import type { MemoryPressure, MemoryReading, MemorySource } from "./source";

/**
 * macOS source. Available = free + inactive + speculative pages (vm_stat's figures).
 *
 * Choice: read the kernel through bun:ffi (libSystem's host_statistics64 and sysctlbyname) —
 * a few microseconds, no process spawned. systeminformation's mem() spawns `vm_stat` and
 * `sysctl` on every call, so it is not used here. Only if FFI is unavailable do we fall back
 * to spawning `vm_stat` + `sysctl`, and then only from the background sampler, once per
 * interval, never per request or per check.
 */

/** Raw page counts from vm_statistics64 (kernel naming: free_count still includes speculative pages). */
export interface VmPageCounts {
  freeCount: number;
  activeCount: number;
  inactiveCount: number;
  wireCount: number;
  speculativeCount: number;
}

// Byte offsets in struct vm_statistics64 (mach/vm_statistics.h); sizeof = 152, aligned 8.
const VM64 = { free: 0, active: 4, inactive: 8, wire: 12, speculative: 92, size: 152 } as const;
// HOST_VM_INFO64 flavor and its count in integer_t units (152 / 4).
const HOST_VM_INFO64 = 4;
const HOST_VM_INFO64_COUNT = VM64.size / 4;

/** Decode the page counts from a vm_statistics64 buffer. */
export function parseVmStatistics64(buf: ArrayBufferView): VmPageCounts {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v.byteLength < VM64.size) throw new Error(`vm_statistics64 buffer too small: ${v.byteLength}`);
  const u32 = (off: number) => v.getUint32(off, true);
  return {
    freeCount: u32(VM64.free),
    activeCount: u32(VM64.active),
    inactiveCount: u32(VM64.inactive),
    wireCount: u32(VM64.wire),
    speculativeCount: u32(VM64.speculative),
  };
}

/**
 * Available bytes. vm_stat prints "Pages free" as free_count - speculative_count, so its
 * free + inactive + speculative equals the kernel's free_count + inactive_count.
 */
export function darwinAvailableBytes(c: VmPageCounts, pageSize: number): number {
  const free = c.freeCount - c.speculativeCount;
  return (free + c.inactiveCount + c.speculativeCount) * pageSize;
}

/** kern.memorystatus_vm_pressure_level: 1 normal, 2 warn, 4 critical. */
export function pressureFromLevel(level: number): MemoryPressure {
  if (level >= 4) return "critical";
  if (level >= 2) return "warn";
  return "normal";
}

/** Parse `vm_stat` output (fallback path) into available bytes. */
export function parseVmStat(text: string): number {
  const pageSize = Number(/page size of (\d+) bytes/.exec(text)?.[1]);
  const pages = (label: string) => {
    const m = new RegExp(`^${label}:\\s+(\\d+)\\.?\\s*$`, "m").exec(text);
    if (!m) throw new Error(`vm_stat output lacks "${label}"`);
    return Number(m[1]);
  };
  if (!Number.isFinite(pageSize) || pageSize <= 0) throw new Error("vm_stat output lacks the page size");
  return (pages("Pages free") + pages("Pages inactive") + pages("Pages speculative")) * pageSize;
}

interface DarwinKernel {
  vmCounts(): VmPageCounts;
  pageSize: number;
  pressureLevel(): number;
}

// Bind libSystem through bun:ffi. Throws when FFI or the symbols are unavailable.
async function bindKernel(): Promise<DarwinKernel> {
  const { dlopen, FFIType } = await import("bun:ffi");
  const lib = dlopen("/usr/lib/libSystem.B.dylib", {
    mach_host_self: { args: [], returns: FFIType.u32 },
    host_statistics64: { args: [FFIType.u32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
    sysctlbyname: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  });
  const sym = lib.symbols;
  // mach_host_self() hands out a send right each call; take one and keep it.
  const host = sym.mach_host_self();
  const info = new BigUint64Array(VM64.size / 8);
  const count = new Uint32Array(1);
  const sysctlInt = (name: string): number => {
    const out = new BigInt64Array(1);
    const len = new BigUint64Array([8n]);
    const rc = sym.sysctlbyname(Buffer.from(`${name}\0`), out, len, null, 0);
    if (rc !== 0) throw new Error(`sysctlbyname(${name}) failed`);
    // Integer sysctls are 4 or 8 bytes; little-endian, so the low word is right either way.
    return len[0] === 4n ? new Int32Array(out.buffer)[0]! : Number(out[0]);
  };
  const pageSize = sysctlInt("vm.pagesize");
  const kernel: DarwinKernel = {
    pageSize,
    vmCounts() {
      count[0] = HOST_VM_INFO64_COUNT;
      const rc = sym.host_statistics64(host, HOST_VM_INFO64, info, count);
      if (rc !== 0) throw new Error(`host_statistics64 failed: kern_return ${rc}`);
      return parseVmStatistics64(info);
    },
    pressureLevel: () => sysctlInt("kern.memorystatus_vm_pressure_level"),
  };
  kernel.vmCounts(); // fail now, not on the first sample
  return kernel;
}

async function spawnText(cmd: string[]): Promise<string> {
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "ignore", stdin: "ignore" });
  const [text, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
  if (code !== 0) throw new Error(`${cmd[0]} exited with ${code}`);
  return text;
}

/** The macOS source: FFI when possible, else background `vm_stat` (see the module comment). */
export function createDarwinSource(): MemorySource {
  let kernel: Promise<DarwinKernel | null> | null = null;
  let warned = false;
  const source: MemorySource & { name: string } = {
    name: "darwin host_statistics64 + memorystatus pressure",
    injected: false,
    async read(): Promise<MemoryReading> {
      kernel ??= bindKernel().catch((err) => {
        if (!warned) process.stderr.write(`memory: bun:ffi unavailable (${String(err)}); sampling via vm_stat in the background\n`);
        warned = true;
        source.name = "darwin vm_stat (spawned per background sample)";
        return null;
      });
      const k = await kernel;
      if (k) {
        const counts = k.vmCounts();
        const level = k.pressureLevel();
        return {
          availableBytes: darwinAvailableBytes(counts, k.pageSize),
          pressure: pressureFromLevel(level),
          detail: { pressureLevel: level, pageSize: k.pageSize },
        };
      }
      // Fallback: spawns, but only here in the background sampler (once per interval).
      const [vm, level] = await Promise.all([
        spawnText(["vm_stat"]),
        spawnText(["sysctl", "-n", "kern.memorystatus_vm_pressure_level"]).then(Number).catch(() => 1),
      ]);
      return { availableBytes: parseVmStat(vm), pressure: pressureFromLevel(level), detail: { pressureLevel: level } };
    },
  };
  return source;
}
