/**
 * Bad input, in process: thousands of generated requests to /v1/messages and count_tokens
 * through app.handle with a FakeEngine. Every answer is an Anthropic-shaped 4xx (or, for the
 * cases marked accept, a well-formed 200), never a 5xx, never a hang; memory stays flat.
 * Replay a run with PENSIEVE_FUZZ_SEED=<seed printed below>; PENSIEVE_FUZZ_RUNS raises the count.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { heapStats } from "bun:jsc";
import fc from "fast-check";
import { appTuning, createApp } from "../../src/app";
import { serveDefaults } from "../../src/config";
import { FakeEngine } from "../support/fake-engine";
import { FakeMemoryMonitor } from "../support/fake-memory";
import { COUNT, type FuzzCase, MESSAGES, fuzzCase } from "./fuzz-cases";
import { describeCase, fuzzSeed, judgeAnswer, toRequest } from "./fuzz-run";
import { deadline, errorShapeProblems } from "./support";

// In process, but thousands of cases; a loaded CI machine can be slow.
setDefaultTimeout(120_000);

const TOKEN = "fuzz-token";
const BASE = "http://localhost";
const RUNS = Math.max(2000, Number(process.env.PENSIEVE_FUZZ_RUNS ?? 0) || 0);
const CONTEXT = 4096;
const MB = 1024 * 1024;

function makeApp() {
  const engine = new FakeEngine({ model: { contextLength: CONTEXT } });
  const memory = new FakeMemoryMonitor();
  const app = createApp({
    engine,
    memory,
    config: { ...appTuning(serveDefaults()), token: TOKEN, aliases: "*=default", allowedHosts: [], version: "0.0.0-fuzz" },
    docs: false,
  });
  return { app, engine };
}

/** judgeAnswer, plus: max_tokens beyond the context reaches the engine clamped, not refused. */
async function judge(c: FuzzCase, res: Response, engine: FakeEngine): Promise<string[]> {
  const problems = judgeAnswer(c, res.status, res.headers, await res.text());
  const seen = engine.requests.at(-1);
  if (res.status === 200 && c.maxTokens !== undefined && seen && seen.maxTokens !== Math.min(c.maxTokens, CONTEXT))
    problems.push(`engine saw maxTokens ${seen.maxTokens} for max_tokens ${c.maxTokens}`);
  return problems;
}

/** Lets pending setImmediate work run: Elysia's afterResponse hooks (and their request contexts) wait there. */
const macrotask = () => new Promise<void>((resolve) => setImmediate(resolve));

async function memory(): Promise<{ rssMb: number; objects: number }> {
  await Bun.sleep(10);
  Bun.gc(true);
  return { rssMb: process.memoryUsage.rss() / MB, objects: heapStats().objectCount };
}

describe("fuzz /v1/messages and count_tokens in process", () => {
  test(`${RUNS} generated bad requests: shaped 4xx, no 5xx, no hang, flat memory`, async () => {
    const seed = fuzzSeed();
    console.log(`[fuzz] seed=${seed} runs=${RUNS} (replay: PENSIEVE_FUZZ_SEED=${seed} bun test test/reliability/fuzz.test.ts)`);
    const { app, engine } = makeApp();
    const arb = fuzzCase({ maxTokensCap: 4096, hugeMaxTokens: true });
    const stats = new Map<string, { n: number; statuses: Map<number, number> }>();

    const property = fc.asyncProperty(arb, async (c) => {
      const res = await deadline(app.handle(toRequest(BASE, c, TOKEN)), 10_000, describeCase(c));
      const problems = await deadline(judge(c, res, engine), 10_000, `reading the answer to ${describeCase(c)}`);
      // The FakeEngine records every request; keep the memory check about the server.
      engine.requests.length = 0;
      engine.counted.length = 0;
      engine.completed.length = 0;
      await macrotask();
      const group = c.kind.split(":")[0]!;
      const s = stats.get(group) ?? { n: 0, statuses: new Map() };
      s.n++;
      s.statuses.set(res.status, (s.statuses.get(res.status) ?? 0) + 1);
      stats.set(group, s);
      if (problems.length) throw new Error(`${problems.join("; ")}\n  case: ${describeCase(c)}`);
    });

    // Warm up (JIT, allocator, Elysia's compiled validators) before the memory baseline.
    await fc.assert(property, { seed: seed ^ 0x5eed, numRuns: 200 });
    stats.clear();
    const before = await memory();
    await fc.assert(property, { seed, numRuns: RUNS });
    const after = await memory();

    const total = [...stats.values()].reduce((a, s) => a + s.n, 0);
    const rows = [...stats.entries()]
      .sort((a, b) => b[1].n - a[1].n)
      .map(([k, s]) => `  ${k.padEnd(22)} ${String(s.n).padStart(5)}  ${[...s.statuses].map(([st, n]) => `${st}x${n}`).join(" ")}`);
    console.log(`[fuzz] ${total} cases by kind (status x count):\n${rows.join("\n")}`);
    console.log(
      `[fuzz] after Bun.gc: RSS ${before.rssMb.toFixed(1)} -> ${after.rssMb.toFixed(1)} MB, ` +
        `live JS objects ${before.objects} -> ${after.objects} (${((after.objects - before.objects) / RUNS).toFixed(2)} per request)`,
    );

    expect(total).toBeGreaterThanOrEqual(RUNS);
    // Every generator took part.
    for (const k of ["malformed-json", "json-not-a-request", "invalid-utf8", "wrong-content-type", "missing", "wrong-type", "extra-fields", "deep", "max_tokens", "empty-messages", "roles", "bad-role", "tool_result", "range", "invalid"])
      expect(stats.get(k)?.n ?? 0).toBeGreaterThan(0);
    expect(({} as Record<string, unknown>).pensievePolluted).toBeUndefined();
    // Flat: a leak of even 10 objects per request would show as 20,000+; RSS only gets a generous bound.
    expect(after.objects - before.objects).toBeLessThan(RUNS * 5);
    expect(after.rssMb - before.rssMb).toBeLessThan(160);
  });

  test("bodies over 32 MB get an Anthropic 413, by content-length and while streaming", async () => {
    const { app } = makeApp();
    const big = new Uint8Array(33 * MB).fill(0x20);
    big[0] = 0x7b;
    const chunked = () =>
      new ReadableStream<Uint8Array>({
        start(ctrl) {
          const chunk = new Uint8Array(MB).fill(0x20);
          for (let i = 0; i < 40; i++) ctrl.enqueue(chunk);
          ctrl.close();
        },
      });
    const cases: [string, () => Request][] = [
      ["33 MB with content-length", () => new Request(BASE + MESSAGES, { method: "POST", headers: { "x-api-key": TOKEN, "content-type": "application/json" }, body: big })],
      ["40 MB chunked, no content-length", () => new Request(BASE + MESSAGES, { method: "POST", headers: { "x-api-key": TOKEN, "content-type": "application/json" }, body: chunked() })],
      ["count_tokens, 40 MB chunked", () => new Request(BASE + COUNT, { method: "POST", headers: { "x-api-key": TOKEN, "content-type": "application/json" }, body: chunked() })],
      ["a lying content-length of 1 TB", () => new Request(BASE + MESSAGES, { method: "POST", headers: { "x-api-key": TOKEN, "content-type": "application/json", "content-length": String(2 ** 40) }, body: "{}" })],
    ];
    for (const [name, make] of cases) {
      const res = await deadline(app.handle(make()), 30_000, name);
      const text = await res.text();
      expect({ name, status: res.status }).toEqual({ name, status: 413 });
      expect(errorShapeProblems(res.status, res.headers, text)).toEqual([]);
      expect(JSON.parse(text).error.type).toBe("request_too_large");
    }
  });

  test("large but valid bodies (under 32 MB) are answered, not hung on", async () => {
    const { app } = makeApp();
    const many = Array.from({ length: 100_000 }, (_, i) => ({ role: i % 2 ? "assistant" : "user", content: "x" }));
    const blocks = Array.from({ length: 100_000 }, () => ({ type: "text", text: "y" }));
    const cases: [string, string, unknown][] = [
      ["100k messages", MESSAGES, { model: "m", max_tokens: 5, messages: many }],
      ["100k blocks, count_tokens", COUNT, { model: "m", messages: [{ role: "user", content: blocks }] }],
      ["one 20 MB string", MESSAGES, { model: "m", max_tokens: 5, stream: true, messages: [{ role: "user", content: "z".repeat(20 * MB) }] }],
      ["a 1 MB model name", MESSAGES, { model: "m".repeat(MB), max_tokens: 5, messages: [{ role: "user", content: "hi" }] }],
    ];
    for (const [name, path, json] of cases) {
      const req = new Request(BASE + path, { method: "POST", headers: { "x-api-key": TOKEN, "content-type": "application/json" }, body: JSON.stringify(json) });
      const res = await deadline(app.handle(req), 60_000, name);
      // A prompt that cannot fit whatever it tokenizes to is refused up front, with Anthropic's wording.
      const text = await deadline(res.text(), 60_000, `${name}: body`);
      // count_tokens refuses hopeless sizes up front too (issue 10, item 9).
      if (name === "one 20 MB string" || name === "100k blocks, count_tokens") {
        expect({ name, status: res.status }).toEqual({ name, status: 400 });
        expect(JSON.parse(text).error.message).toMatch(/^prompt is too long: \d+ tokens > \d+ maximum$/);
      } else expect({ name, status: res.status }).toEqual({ name, status: 200 });
    }
  });

  test("a wrong or missing token is refused before the body is read, whatever the body", async () => {
    const { app } = makeApp();
    const bodies = ["{not json", '{"model":"x","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}', "[".repeat(10_000)];
    for (const body of bodies)
      for (const headers of [{}, { "x-api-key": "wrong" }, { authorization: `Bearer ${TOKEN}x` }] as Record<string, string>[]) {
        const res = await app.handle(new Request(BASE + MESSAGES, { method: "POST", headers: { "content-type": "application/json", ...headers }, body }));
        const text = await res.text();
        expect(res.status).toBe(401);
        expect(errorShapeProblems(res.status, res.headers, text)).toEqual([]);
      }
  });
});
