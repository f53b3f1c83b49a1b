/**
 * Micro-benchmark: what a memory check costs on the request path.
 * Run: node_modules/.bin/bun bench/memory-check.ts [--json]
 *
 * Measures, in ns per call (median of repeats, each repeat timing many iterations):
 * - checkStatus() on the real monitor (last sample + staleness test; no I/O),
 * - checkStatus() + availableGb() + header formatting, i.e. the guard's onRequest work,
 * - one background sample from the platform source (the I/O the sampler does off the request path).
 */
import { serveDefaults } from "../src/config";
import { createMemoryMonitor, monitorTuning } from "../src/memory/monitor";
import { createMemorySource } from "../src/memory/select-source";

const ITERATIONS = 1_000_000;
const REPEATS = 15;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** ns per call of fn, median over REPEATS runs of `iterations` calls. */
function measure(fn: () => unknown, iterations = ITERATIONS): { medianNs: number; minNs: number; maxNs: number } {
  let sink = 0;
  for (let i = 0; i < 10_000; i++) sink ^= fn() ? 1 : 0; // warm up the JIT
  const runs: number[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const t0 = Bun.nanoseconds();
    for (let i = 0; i < iterations; i++) sink ^= fn() ? 1 : 0;
    runs.push((Bun.nanoseconds() - t0) / iterations);
  }
  if (sink === 42) console.log(""); // keep results observable
  return { medianNs: median(runs), minNs: Math.min(...runs), maxNs: Math.max(...runs) };
}

async function measureAsync(fn: () => Promise<unknown>, iterations: number): Promise<{ medianNs: number; minNs: number; maxNs: number }> {
  for (let i = 0; i < 50; i++) await fn();
  const runs: number[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const t0 = Bun.nanoseconds();
    for (let i = 0; i < iterations; i++) await fn();
    runs.push((Bun.nanoseconds() - t0) / iterations);
  }
  return { medianNs: median(runs), minNs: Math.min(...runs), maxNs: Math.max(...runs) };
}

const monitor = createMemoryMonitor({ ...monitorTuning(serveDefaults()), source: "auto" });
await monitor.sampleNow();
const headers: Record<string, string> = {};

const check = measure(() => monitor.checkStatus());
const headerWork = measure(() => {
  headers["x-memory-status"] = monitor.checkStatus();
  const gb = monitor.availableGb();
  headers["x-available-memory-gb"] = Number.isFinite(gb) ? gb.toFixed(2) : "unknown";
  return headers;
});
const source = createMemorySource("auto");
const sample = await measureAsync(() => source.read(), 2_000);

const result = {
  platform: `${process.platform}-${process.arch}`,
  bun: Bun.version,
  source: monitor.source.name,
  iterations: ITERATIONS,
  repeats: REPEATS,
  checkStatusNs: check,
  guardHeadersNs: headerWork,
  backgroundSampleNs: sample,
};

if (process.argv.includes("--json")) {
  console.log(JSON.stringify(result, null, 2));
} else {
  const f = (x: { medianNs: number; minNs: number; maxNs: number }) => `median ${x.medianNs.toFixed(1)} ns (min ${x.minNs.toFixed(1)}, max ${x.maxNs.toFixed(1)})`;
  console.log(`memory check cost on ${result.platform}, bun ${result.bun}, source ${result.source}`);
  console.log(`  checkStatus():                         ${f(check)}`);
  console.log(`  guard onRequest (status + GB header):  ${f(headerWork)}`);
  console.log(`  one background sample (off the path):  ${f(sample)}`);
}
monitor.stop();
