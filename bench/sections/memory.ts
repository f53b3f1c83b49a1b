/**
 * Figure 5, memory: the Bun server's RSS at idle and under 8 concurrent streams; the worker's
 * RSS and MLX memory after 100 requests against its baseline after load (/health); the server's
 * RSS after many cheap requests (count_tokens over HTTP, which pass the gate, validation and
 * the worker's tokenizer) to look for leaks. RSS is VmRSS from /proc/PID/status.
 */
import { anthropicStream } from "../lib/clients";
import type { SectionResult } from "../lib/report";
import { startPensieve, TOKEN, type Pensieve } from "../lib/servers";
import { log, median, ratio, rssMb, sig } from "../lib/util";
import { promptBody } from "./engines";

// The worker reports decimal GB (10^9 bytes); the tables use MiB.
const mb = (gb: number | null | undefined) => (typeof gb === "number" ? (gb * 1e9) / 2 ** 20 : Number.NaN);

async function workerMemory(p: Pensieve) {
  const h = await p.health();
  const e = h.engine ?? {};
  const pc = e.promptCache ?? {};
  return {
    rssMb: mb(e.workerRssGb),
    activeMb: mb(e.mlx?.activeGb),
    cacheMb: mb(e.mlx?.cacheGb),
    peakMb: mb(e.mlx?.peakGb),
    // The prompt-prefix cache's KV bytes (bounded by count and bytes): kept on purpose, not a leak.
    promptCacheMb: typeof pc.bytes === "number" ? pc.bytes / 2 ** 20 : Number.NaN,
    promptCacheEntries: typeof pc.entries === "number" ? pc.entries : Number.NaN,
    pid: e.workerPid as number | undefined,
  };
}

/** Sample a pid's RSS every `everyMs` until stopped. */
function rssSampler(pid: number, everyMs = 20) {
  const samples: number[] = [];
  const timer = setInterval(() => samples.push(rssMb(pid)), everyMs);
  return {
    stop() {
      clearInterval(timer);
      return samples.filter(Number.isFinite);
    },
  };
}

async function countTokens(url: string, i: number): Promise<number> {
  const res = await fetch(`${url}/v1/messages/count_tokens`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": TOKEN },
    body: JSON.stringify({ model: "claude-sonnet-4-5", messages: [{ role: "user", content: `Count the tokens of request number ${i}, please.` }] }),
  });
  await res.arrayBuffer();
  return res.status;
}

/** `total` requests, `concurrency` in flight; returns req/s and the status counts. */
async function hammer(url: string, total: number, concurrency: number, offset: number) {
  let next = 0;
  const statuses: Record<number, number> = {};
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < total; i = next++) {
        const s = await countTokens(url, offset + i);
        statuses[s] = (statuses[s] ?? 0) + 1;
      }
    }),
  );
  return { rps: (total * 1000) / (performance.now() - t0), statuses };
}

export async function memorySection(modelDir: string, opts: { quick: boolean }): Promise<SectionResult> {
  const p = await startPensieve(modelDir);
  try {
    await Bun.sleep(1000);
    const idle = rssMb(p.pid);
    const workerBaseline = await workerMemory(p);
    log(`memory: server idle RSS ${idle.toFixed(1)} MiB, worker after load ${workerBaseline.rssMb.toFixed(1)} MiB`);

    // 8 concurrent streams (one generates, seven wait in the queue: its default bound is 8).
    const c = { label: "tiny", dir: modelDir, maxTokens: 512, repeats: 1, promptWords: 40 };
    const sampler = rssSampler(p.pid);
    const streams = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => anthropicStream(p.url, promptBody(1000 + i, c), TOKEN)));
    const during = sampler.stop();
    const ok = streams.filter((s) => s.status === "fulfilled").length;
    const failed = streams.filter((s): s is PromiseRejectedResult => s.status === "rejected").map((s) => String(s.reason).slice(0, 200));
    log(`memory: 8 streams: ${ok} completed, server RSS median ${median(during).toFixed(1)} MiB, peak ${Math.max(...during).toFixed(1)} MiB`);

    // 100 requests through the worker; compare with its baseline after load (and after 5, once warm).
    const n = opts.quick ? 30 : 100;
    const short = { ...c, maxTokens: 64 };
    let warm = workerBaseline;
    for (let i = 0; i < n; i++) {
      await anthropicStream(p.url, promptBody(2000 + i, { ...short, promptWords: 20 + (i % 5) * 40 }), TOKEN);
      if (i === 4) warm = await workerMemory(p);
    }
    await Bun.sleep(500);
    const workerAfter = await workerMemory(p);
    log(`memory: worker after ${n} requests ${workerAfter.rssMb.toFixed(1)} MiB (baseline ${workerBaseline.rssMb.toFixed(1)}, after 5 ${warm.rssMb.toFixed(1)})`);

    // Many cheap requests: does the server's RSS keep growing? JSC collects lazily, so each
    // checkpoint is read after a few idle seconds (Bun's idle GC), with the peak right before.
    const total = opts.quick ? 2000 : 10_000;
    const warmup = opts.quick ? 500 : 2000;
    const settleMs = 3000;
    await hammer(p.url, warmup, 8, 0);
    await Bun.sleep(settleMs);
    const before = rssMb(p.pid);
    const checkpoints: { requests: number; rssMb: number | null; rssRightAfterMb: number | null }[] = [{ requests: 0, rssMb: sig(before), rssRightAfterMb: null }];
    const statuses: Record<number, number> = {};
    const rpsSamples: number[] = [];
    const step = total / 4;
    for (let done = 0; done < total; done += step) {
      const h = await hammer(p.url, step, 8, warmup + done);
      rpsSamples.push(h.rps);
      for (const [k, v] of Object.entries(h.statuses)) statuses[Number(k)] = (statuses[Number(k)] ?? 0) + v;
      const hot = rssMb(p.pid);
      await Bun.sleep(settleMs);
      checkpoints.push({ requests: done + step, rssMb: sig(rssMb(p.pid)), rssRightAfterMb: sig(hot) });
    }
    const after = rssMb(p.pid);
    const half = checkpoints[2]?.rssMb ?? Number.NaN;
    const peakHot = Math.max(...checkpoints.map((c) => c.rssRightAfterMb ?? 0));
    log(`memory: server RSS ${before.toFixed(1)} -> ${after.toFixed(1)} MiB over ${total} count_tokens requests (checkpoints ${checkpoints.map((c) => c.rssMb).join(", ")}; ${JSON.stringify(statuses)})`);

    const workerRatio = ratio(workerAfter.rssMb, workerBaseline.rssMb);
    const pcMb = Number.isFinite(workerAfter.promptCacheMb) ? workerAfter.promptCacheMb : 0;
    const workerRatioNoCache = ratio(workerAfter.rssMb - pcMb, workerBaseline.rssMb);
    const serverRatio = ratio(after, before);
    const streamPeak = Math.max(...during);
    return {
      key: "memory",
      title: "5. Memory",
      data: {
        model: "tiny",
        server: { idleRssMb: sig(idle), streams8: { completed: ok, failed, medianRssMb: sig(median(during)), peakRssMb: sig(streamPeak), samples: during.length } },
        worker: {
          requests: n,
          baseline: workerBaseline,
          afterFive: warm,
          after: workerAfter,
          rssRatio: sig(workerRatio),
          rssRatioWithoutPromptCache: sig(workerRatioNoCache),
          rssRatioVsWarm: sig(ratio(workerAfter.rssMb, warm.rssMb)),
          note: "baseline = /health right after load; the worker's load includes a warm-up generation (PROTOCOL.md, load.warmup)",
        },
        leak: {
          endpoint: "POST /v1/messages/count_tokens over HTTP, 8 in flight",
          requests: total,
          warmupRequests: warmup,
          settleMs,
          rssBeforeMb: sig(before),
          rssAfterMb: sig(after),
          peakRightAfterBurstMb: sig(peakHot),
          ratio: sig(serverRatio),
          secondHalfRatio: sig(ratio(after, half)),
          checkpoints,
          statuses,
          rps: sig(median(rpsSamples)),
        },
      },
      rows: [
        { figure: "Memory", measure: "Bun server RSS at idle (tiny model loaded in the worker)", value: `${idle.toFixed(1)} MiB`, reference: "", ratio: null, target: "", met: null },
        { figure: "Memory", measure: `Bun server RSS under 8 concurrent streams (${ok}/8 completed)`, value: `${streamPeak.toFixed(1)} MiB peak`, reference: `${idle.toFixed(1)} MiB idle`, ratio: ratio(streamPeak, idle), target: "", met: null },
        {
          figure: "Memory",
          measure: `worker RSS after ${n} requests vs baseline after load (tiny model)`,
          value: `${workerAfter.rssMb.toFixed(1)} MiB`,
          reference: `${workerBaseline.rssMb.toFixed(1)} MiB after load and warm-up (${warm.rssMb.toFixed(1)} after 5 requests; prompt cache ${pcMb.toFixed(2)} MiB in ${workerAfter.promptCacheEntries} entries, ratio without it ${workerRatioNoCache.toFixed(3)})`,
          ratio: workerRatio,
          target: "within a few % (≤ 1.05)",
          met: Number.isFinite(workerRatio) ? workerRatio <= 1.05 : null,
        },
        {
          figure: "Memory",
          measure: `worker MLX active / cache after ${n} requests`,
          value: `${workerAfter.activeMb.toFixed(2)} / ${workerAfter.cacheMb.toFixed(2)} MiB`,
          reference: `${workerBaseline.activeMb.toFixed(2)} / ${workerBaseline.cacheMb.toFixed(2)} MiB after load`,
          ratio: ratio(workerAfter.activeMb, workerBaseline.activeMb),
          target: "",
          met: null,
        },
        {
          figure: "Memory",
          measure: `Bun server RSS after ${total.toLocaleString("en")} count_tokens requests (HTTP, 8 in flight, ${median(rpsSamples).toFixed(0)} req/s; each reading ${settleMs / 1000} s after its burst)`,
          value: `${after.toFixed(1)} MiB (${half.toFixed(1)} at half-way; peak ${peakHot.toFixed(1)} mid-burst)`,
          reference: `${before.toFixed(1)} MiB after ${warmup.toLocaleString("en")} warm-up requests`,
          ratio: serverRatio,
          target: "flat (≤ 1.10)",
          met: Number.isFinite(serverRatio) ? serverRatio <= 1.1 : null,
        },
      ],
      bars: [
        { label: `worker RSS after ${n} req / after load`, value: workerRatio, target: 1.05, higherIsBetter: false },
        { label: `server RSS after ${total} req / before`, value: serverRatio, target: 1.1, higherIsBetter: false },
      ],
    };
  } finally {
    await p.stop();
  }
}
