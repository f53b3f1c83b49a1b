/**
 * Figure 1, the gate: what a memory check and the gate decision cost per request (ns), and
 * requests/s on /v1/messages/count_tokens with the gate on and off, in process via app.handle
 * with a fake engine so that the engine and the network do not drown the difference.
 */
import { join } from "node:path";
import { appTuning, createApp } from "../../src/app";
import { memoryThresholds, serveDefaults } from "../../src/config";
import { gateAction } from "../../src/memory/gate";
import { createMemoryMonitor, monitorTuning } from "../../src/memory/monitor";
import type { MemoryMonitor } from "../../src/memory/types";
import { FakeEngine } from "../../test/support/fake-engine";
import type { SectionResult } from "../lib/report";
import { log, median, ratio, sig } from "../lib/util";

const TOKEN = "bench-token";
const BODY = JSON.stringify({
  model: "claude-sonnet-4-5",
  system: "You are a helpful assistant.",
  messages: [{ role: "user", content: "How many tokens is this sentence, roughly?" }],
});

/** bench/memory-check.ts (the memory helper's micro-benchmark), run as it is meant to be run. */
async function memoryCheck(): Promise<Record<string, any> | null> {
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, "..", "memory-check.ts"), "--json"], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) {
    log(`memory-check.ts failed (${code}): ${err.slice(-500)}`);
    return null;
  }
  return JSON.parse(out);
}

/** ns per call of the gate decision on the real monitor: checkStatus() -> gateAction(). */
function decisionNs(monitor: MemoryMonitor, repeats: number): number {
  const n = 1_000_000;
  let sink = 0;
  const step = () => (sink += gateAction(monitor.checkStatus()).length);
  for (let i = 0; i < 20_000; i++) step();
  const runs: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = Bun.nanoseconds();
    for (let i = 0; i < n; i++) step();
    runs.push((Bun.nanoseconds() - t0) / n);
  }
  if (sink === -1) console.log(sink); // keep the loop observable
  return median(runs);
}

type Handler = { handle(req: Request): Promise<Response> };

async function rps(app: Handler, n: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const res = await app.handle(
      new Request("http://localhost/v1/messages/count_tokens", {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": TOKEN },
        body: BODY,
      }),
    );
    if (res.status !== 200) throw new Error(`count_tokens answered ${res.status}: ${await res.text()}`);
    await res.arrayBuffer();
  }
  return (n * 1000) / (performance.now() - t0);
}

export async function gateSection(opts: { quick: boolean }): Promise<SectionResult> {
  log("gate: memory-check.ts micro-benchmark");
  const mc = await memoryCheck();

  const monitor = createMemoryMonitor({ ...monitorTuning(serveDefaults()), source: "auto" });
  await monitor.start();
  const limits = memoryThresholds(serveDefaults());
  const safe: MemoryMonitor = { checkStatus: () => "safe", availableGb: () => 16, thresholds: () => ({ ...limits }) };
  const config = { ...appTuning(serveDefaults()), token: TOKEN, aliases: "*=default", allowedHosts: [] as string[], version: "bench" };
  const engine = new FakeEngine();
  const apps: Record<string, Handler> = {
    on: createApp({ engine, memory: monitor, config, docs: false }),
    stub: createApp({ engine, memory: safe, config, docs: false }),
    off: createApp({ engine, memory: monitor, config, docs: false, gate: false }),
  };
  try {
    log("gate: decision cost");
    const decision = decisionNs(monitor, opts.quick ? 5 : 15);

    // Short interleaved batches after a GC each: on a shared machine, drift and GC pauses
    // otherwise swamp a difference of a few microseconds.
    const per = 500;
    const rounds = opts.quick ? 10 : 40;
    log(`gate: count_tokens requests/s, ${rounds} interleaved batches x ${per} requests per variant`);
    for (const app of Object.values(apps)) await rps(app, opts.quick ? 1000 : 3000); // warm up the JIT and Elysia's compiled handlers
    // The variants must differ by the guard: its header is on every guarded response, and only there.
    for (const [k, app] of Object.entries(apps)) {
      const res = await app.handle(new Request("http://localhost/v1/messages/count_tokens", { method: "POST", headers: { "content-type": "application/json", "x-api-key": TOKEN }, body: BODY }));
      if (res.headers.has("x-memory-status") !== (k !== "off")) throw new Error(`gate variant '${k}' is not what it claims (x-memory-status ${res.headers.get("x-memory-status")})`);
    }
    const samples: Record<string, number[]> = { on: [], stub: [], off: [] };
    for (let r = 0; r < rounds; r++) {
      // Rotate the order so that no variant always runs first.
      const order = ["on", "stub", "off"].map((_, i, a) => a[(i + r) % a.length]!);
      for (const k of order) {
        Bun.gc(true);
        samples[k]!.push(await rps(apps[k]!, per));
      }
    }
    const on = median(samples.on!);
    const stub = median(samples.stub!);
    const off = median(samples.off!);
    const guardNs = (1 / on - 1 / off) * 1e9;

    const data = {
      memoryCheck: mc,
      decisionNs: sig(decision),
      countTokensRps: { gateOn: sig(on), gateOnConstantMonitor: sig(stub), gateOff: sig(off), batches: rounds, requestsPerBatch: per, samples: Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, v.map((x) => sig(x))])) },
      ratioOnOff: sig(ratio(on, off)),
      guardCostPerRequestNs: sig(guardNs),
      method: "in process: app.handle(new Request) in interleaved batches after Bun.gc(true), FakeEngine; 'on' = createApp with the real sampled monitor (Linux /proc/meminfo), 'stub' = createApp with a constant-Safe monitor, 'off' = createApp(..., gate: false): the same app without the memory guard",
    };
    const checkNs = mc?.checkStatusNs?.medianNs ?? Number.NaN;
    const headersNs = mc?.guardHeadersNs?.medianNs ?? Number.NaN;
    return {
      key: "gate",
      title: "1. Gate",
      data,
      rows: [
        { figure: "Gate", measure: "memory check: checkStatus() (bench/memory-check.ts)", value: `${fmtNs(checkNs)}`, reference: "bound in issue 3: < 10 ms", ratio: null, target: "microseconds", met: Number.isFinite(checkNs) ? checkNs < 10_000 : null },
        { figure: "Gate", measure: "gate decision: gateAction(checkStatus())", value: fmtNs(decision), reference: "", ratio: null, target: "", met: null },
        { figure: "Gate", measure: "guard onRequest headers (status + GB)", value: fmtNs(headersNs), reference: "", ratio: null, target: "", met: null },
        { figure: "Gate", measure: "background sample (off the request path)", value: fmtNs(mc?.backgroundSampleNs?.medianNs ?? Number.NaN), reference: "", ratio: null, target: "", met: null },
        {
          figure: "Gate",
          measure: "count_tokens req/s, gate on vs off (in process)",
          value: `${on.toFixed(0)} req/s`,
          reference: `${off.toFixed(0)} req/s off (${stub.toFixed(0)} with a constant monitor)`,
          ratio: ratio(on, off),
          target: "",
          met: null,
        },
        { figure: "Gate", measure: "whole guard per request (1/on - 1/off)", value: fmtNs(guardNs), reference: "", ratio: null, target: "", met: null },
      ],
      bars: [{ label: "gate on/off req/s (count_tokens)", value: ratio(on, off), target: null, higherIsBetter: true }],
    };
  } finally {
    monitor.stop();
  }
}

export function fmtNs(ns: number): string {
  if (!Number.isFinite(ns)) return "n/a";
  if (Math.abs(ns) >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`;
  if (Math.abs(ns) >= 1e3) return `${(ns / 1e3).toFixed(2)} µs`;
  return `${ns.toFixed(0)} ns`;
}
