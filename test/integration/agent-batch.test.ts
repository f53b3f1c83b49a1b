/**
 * Batched generation through the real server and worker (tiny model): the worker reports
 * max_concurrency > 1, the engine runs that many at once, and 8 concurrent streams all complete.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { checkAnthropicStream, readSse, type WireEvent } from "../support/sse";
import { DEFAULT_TOKEN, type RunningServer, startServer, testPython, tinyModelDir } from "../support/server-process";

setDefaultTimeout(240_000);

let server: RunningServer;

beforeAll(async () => {
  // Room for all eight: the worker batches 4, the rest wait their turn.
  server = await startServer({ args: ["--python", testPython(), "--model", await tinyModelDir(), "--queue-limit", "8"] });
}, 180_000);

afterAll(async () => {
  await server?.stop();
});

async function stream(i: number, maxTokens: number): Promise<{ stopReason: string; text: string; outputTokens: number }> {
  const res = await fetch(`${server.url}/v1/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": DEFAULT_TOKEN, "anthropic-version": "2023-06-01" },
    body: JSON.stringify({
      model: "claude-opus-5-5",
      max_tokens: maxTokens,
      temperature: 0,
      stream: true,
      messages: [{ role: "user", content: `Batched request ${i}: count to ten.` }],
    }),
    signal: AbortSignal.timeout(180_000),
  });
  expect(res.status).toBe(200);
  const events: WireEvent[] = [];
  for await (const ev of readSse(res.body as ReadableStream<Uint8Array>)) events.push(ev);
  const s = checkAnthropicStream(events);
  const text = s.blocks.map((b) => (b.type === "text" ? b.text : "")).join("");
  return { stopReason: s.stopReason, text, outputTokens: s.usage.output_tokens as number };
}

async function engine(): Promise<{ queued: number; running: number }> {
  const h = (await (await fetch(`${server.url}/health`, { headers: { "x-api-key": DEFAULT_TOKEN } })).json()) as { engine: { queued?: number; running?: number } };
  return { queued: h.engine.queued ?? -1, running: h.engine.running ?? -1 };
}

test("8 concurrent streams all complete, with more than one generating at once", async () => {
  let maxRunning = 0;
  let done = false;
  const watch = (async () => {
    while (!done) {
      maxRunning = Math.max(maxRunning, (await engine()).running);
      await Bun.sleep(20);
    }
  })();
  const results = await Promise.all(Array.from({ length: 8 }, (_, i) => stream(i, 200)));
  done = true;
  await watch;
  for (const r of results) {
    expect(["end_turn", "max_tokens"]).toContain(r.stopReason);
    if (r.stopReason === "max_tokens") expect(r.outputTokens).toBe(200);
  }
  expect(maxRunning).toBeGreaterThan(1);
  expect(maxRunning).toBeLessThanOrEqual(4);
});

test("a batched greedy answer is the same as the lone one", async () => {
  const alone = await stream(1, 24);
  const together = await Promise.all([stream(0, 24), stream(1, 24), stream(2, 24)]);
  expect(together[1]!.text).toBe(alone.text);
});
