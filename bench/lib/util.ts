/** Small helpers shared by the benchmark sections: statistics, processes, ports, RSS. */
import { readdirSync, readFileSync } from "node:fs";

export function median(xs: readonly number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return Number.NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

/** Nearest-rank percentile, p in [0, 100]. */
export function percentile(xs: readonly number[], p: number): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return Number.NaN;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))]!;
}

export const ratio = (a: number, b: number): number => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : Number.NaN);

/** Round for JSON output: 4 significant digits is plenty for noisy timings. */
export function sig(x: number, digits = 4): number | null {
  if (!Number.isFinite(x)) return null;
  if (x === 0) return 0;
  return Number(x.toPrecision(digits));
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** Resident set size of a pid in MiB (VmRSS; VmHWM is the peak), or NaN when unreadable. */
export function rssMb(pid: number, field: "VmRSS" | "VmHWM" = "VmRSS"): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** A free loopback port: bind port 0, read it, release it (for servers that cannot take port 0). */
export function freePort(): number {
  const sock = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = sock.port;
  sock.stop(true);
  return port;
}

/** Stop a child by its pid: SIGTERM, then SIGKILL after `graceMs`. Resolves with the exit code. */
export async function stopProc(proc: { pid: number; exitCode: number | null; signalCode?: unknown; kill(sig?: number | NodeJS.Signals): void; exited: Promise<number> }, graceMs = 5000): Promise<number> {
  if (proc.exitCode === null && !proc.signalCode) {
    proc.kill("SIGTERM");
    const t = setTimeout(() => {
      try {
        proc.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, graceMs);
    await proc.exited;
    clearTimeout(t);
  }
  return proc.exitCode ?? 128;
}

/** Poll `url` until it answers 2xx, failing early if `exited()` says the process died. */
export async function waitHttp(url: string, timeoutMs: number, exited: () => boolean, everyMs = 50): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (exited()) throw new Error(`process exited before ${url} answered`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await Bun.sleep(everyMs);
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms`);
}

/** Collect a child's output (for error messages) without blocking it. */
export function drain(stream: ReadableStream<Uint8Array> | null | undefined, keep = 20_000): () => string {
  let buf = "";
  if (stream) {
    void (async () => {
      const dec = new TextDecoder();
      for await (const chunk of chunks(stream)) {
        buf += dec.decode(chunk, { stream: true });
        if (buf.length > keep * 2) buf = buf.slice(-keep);
      }
    })().catch(() => {});
  }
  return () => buf.slice(-keep);
}

/** Wall-clock a thunk n times and keep each duration in ms. */
export async function timeEach(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn(i);
    out.push(performance.now() - t);
  }
  return out;
}

type Killable = { pid: number; kill(sig?: number | NodeJS.Signals): void };
const live = new Set<Killable>();

/** Remember a child so that Ctrl-C on the bench stops it (by its pid) too. */
export function track<T extends Killable & { exited: Promise<number> }>(proc: T): T {
  live.add(proc);
  void proc.exited.finally(() => live.delete(proc));
  return proc;
}

/** SIGTERM every tracked child that is still running. */
export function killTracked(): void {
  for (const p of live) {
    try {
      p.kill("SIGTERM");
    } catch {
      // already gone
    }
  }
}

/** Iterate a byte stream chunk by chunk (a reader loop; the DOM typings lack async iteration). */
export async function* chunks(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (let r = await reader.read(); !r.done; r = await reader.read()) yield r.value;
  } finally {
    reader.releaseLock();
  }
}

/** The pids of a process and all its descendants (from /proc/PID/task/TID/children; Linux only). */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    let kids: number[] = [];
    try {
      for (const tid of readdirSync(`/proc/${p}/task`)) {
        kids = kids.concat(
          readFileSync(`/proc/${p}/task/${tid}/children`, "utf8")
            .split(/\s+/)
            .filter(Boolean)
            .map(Number),
        );
      }
    } catch {
      // gone, or not Linux
    }
    for (const k of kids) if (!out.includes(k)) walk(k);
  };
  walk(pid);
  return out;
}

/** VmRSS summed over a process tree (server + worker), in MiB; NaN when the root is unreadable. */
export function treeRssMb(pid: number): number {
  const pids = processTree(pid);
  const each = pids.map((p) => rssMb(p));
  return Number.isFinite(each[0]!) ? each.filter(Number.isFinite).reduce((a, b) => a + b, 0) : Number.NaN;
}
