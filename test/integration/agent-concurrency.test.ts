/**
 * Concurrent streams through the real server (real worker, tiny model): every request either
 * completes or is refused with 529 overloaded (as a status, or as an in-stream error once the
 * stream had begun); none hangs, and clients that leave free their place.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { checkAnthropicStream, readSse, type WireEvent } from "../support/sse";
import { DEFAULT_TOKEN, type RunningServer, startServer, testPython, tinyModelDir } from "../support/server-process";

setDefaultTimeout(240_000);

const QUEUE_LIMIT = 3;
let server: RunningServer;

beforeAll(async () => {
  server = await startServer({
    args: ["--python", testPython(), "--model", await tinyModelDir(), "--queue-limit", String(QUEUE_LIMIT), "--queue-timeout-ms", "20000"],
  });
}, 180_000);

afterAll(async () => {
  await server?.stop();
});

type Outcome = { kind: "complete"; stopReason: string } | { kind: "overloaded"; via: "status" | "stream"; retryAfter?: string | null };

/** One streamed request; a guard timer turns a hang into a test failure instead of a stuck run. */
async function stream(i: number, maxTokens: number, signal?: AbortSignal): Promise<Outcome> {
  const guard = AbortSignal.timeout(180_000);
  const res = await fetch(`${server.url}/v1/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": DEFAULT_TOKEN, "anthropic-version": "2023-06-01" },
    body: JSON.stringify({
      model: "claude-opus-5-5",
      max_tokens: maxTokens,
      temperature: 0,
      stream: true,
      messages: [{ role: "user", content: `Request ${i}: count to ten.` }],
    }),
    signal: signal ? AbortSignal.any([signal, guard]) : guard,
  });
  if (res.status === 529) {
    const body = (await res.json()) as { type: string; error: { type: string } };
    expect(body.error.type).toBe("overloaded_error");
    return { kind: "overloaded", via: "status", retryAfter: res.headers.get("retry-after") };
  }
  expect(res.status).toBe(200);
  const events: WireEvent[] = [];
  for await (const ev of readSse(res.body as ReadableStream<Uint8Array>)) events.push(ev);
  const summary = checkAnthropicStream(events, { allowError: true });
  if (summary.error) {
    expect(summary.error.error?.type).toBe("overloaded_error");
    return { kind: "overloaded", via: "stream" };
  }
  return { kind: "complete", stopReason: summary.stopReason };
}

async function engineLoad(): Promise<{ queued: number; running: number }> {
  const h = (await (await fetch(`${server.url}/health`, { headers: { "x-api-key": DEFAULT_TOKEN } })).json()) as { engine: { queued?: number; running?: number } };
  return { queued: h.engine.queued ?? -1, running: h.engine.running ?? -1 };
}

async function settle(): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const load = await engineLoad();
    if (load.queued === 0 && load.running === 0) return;
    if (Date.now() > deadline) throw new Error(`engine still busy: ${JSON.stringify(load)}`);
    await Bun.sleep(100);
  }
}

test("8 concurrent streams: each completes or gets 529; none hangs; the queue bound is enforced", async () => {
  // Long enough that the first is still generating when the eighth arrives.
  const outcomes = await Promise.all(Array.from({ length: 8 }, (_, i) => stream(i, 400)));
  for (const o of outcomes) {
    if (o.kind === "complete") expect(["end_turn", "max_tokens"]).toContain(o.stopReason);
    else if (o.via === "status") {
      const secs = Number(o.retryAfter);
      expect(secs).toBeGreaterThanOrEqual(1);
      expect(secs).toBeLessThanOrEqual(60);
    }
  }
  const complete = outcomes.filter((o) => o.kind === "complete").length;
  // One runs and QUEUE_LIMIT wait: those are always served; eight cannot all fit.
  expect(complete).toBeGreaterThanOrEqual(1 + QUEUE_LIMIT);
  expect(outcomes.filter((o) => o.kind === "overloaded").length).toBeGreaterThanOrEqual(1);
  await settle();
  // Served afterwards as usual.
  expect((await stream(99, 4)).kind).toBe("complete");
});

test("clients that leave, running or queued, free their place; the next request is served", async () => {
  const acs = [new AbortController(), new AbortController(), new AbortController()];
  const seen: string[] = [];
  const runs = acs.map((ac, i) =>
    stream(i, 4000, ac.signal).then(
      (o) => seen.push(`${i}:${o.kind}`),
      (e: Error) => seen.push(`${i}:${e.name}`),
    ),
  );
  // Wait until all three are admitted (running, batched in the worker, or queued), then every client leaves.
  const deadline = Date.now() + 60_000;
  for (let l = await engineLoad(); !(l.running >= 1 && l.running + l.queued === 3); l = await engineLoad()) {
    if (Date.now() > deadline) throw new Error(`never saw all 3 running or queued: ${JSON.stringify(l)}`);
    await Bun.sleep(50);
  }
  for (const ac of acs) ac.abort();
  await Promise.all(runs);
  expect(seen.sort()).toEqual(["0:AbortError", "1:AbortError", "2:AbortError"]);
  await settle();
  expect((await stream(100, 4)).kind).toBe("complete");
});
