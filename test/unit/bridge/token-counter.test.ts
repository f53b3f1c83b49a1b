/** count_tokens on the token counter process: never in the generation loop, bounded, restartable. */

import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { EngineError, EngineOverloadedError, EngineTimeoutError, WorkerCrashedError } from "../../../src/engine/errors";
import { FAKE_SECRET, type FakeSetup, collect, fakeEngines, isAlive, req, types } from "./helpers";

// Spawns processes; a loaded 2-core machine can be slow.
setDefaultTimeout(30_000);

const setup = fakeEngines();
const prompt = (content: string) => ({ messages: [{ role: "user" as const, content }] });

async function workerPid(s: FakeSetup): Promise<number> {
  const p = (await s.engine.stats()).workerPid;
  if (p === null) throw new Error("no worker pid");
  return p;
}

describe("token counts run beside generation", () => {
  test("a slow count during a stream: the stream keeps flowing while the count runs", async () => {
    const s = setup({}, { FAKE_WORKER_COUNT_MS: "1500", FAKE_WORKER_TOKEN_MS: "20" });
    await s.engine.start();
    await s.engine.countTokens(prompt("warm")); // the counter is up before we measure
    const ac = new AbortController();
    const arrivals: number[] = [];
    let counting: Promise<{ start: number; end: number; n: number }> | null = null;
    for await (const ev of s.engine.generate(req("slow", { maxTokens: 100_000 }), ac.signal)) {
      if (ev.type !== "text") continue;
      arrivals.push(performance.now());
      counting ??= (async () => {
        const start = performance.now();
        const n = await s.engine.countTokens(prompt("slowcount"));
        return { start, end: performance.now(), n };
      })().finally(() => ac.abort());
    }
    const count = await (counting as NonNullable<typeof counting>);
    expect(count.n).toBeGreaterThan(0);
    const during = arrivals.filter((t) => t > count.start && t < count.end);
    const gaps = [count.start, ...during, count.end].slice(1).map((t, i, all) => t - (i ? (all[i - 1] as number) : count.start));
    // Old behaviour: the worker tokenizes inside its loop, so no event arrives until the count is done.
    expect(during.length).toBeGreaterThanOrEqual(5);
    expect(Math.max(...gaps)).toBeLessThan((count.end - count.start) / 2);
    expect(s.journal().filter((j) => j.cmd === "count_tokens").every((j) => j.role === "counter")).toBe(true);
  });

  test("a count over commandTimeoutMs -> EngineTimeoutError; the model worker is not killed, the counter is restarted", async () => {
    const s = setup({ commandTimeoutMs: 500 });
    await s.engine.start();
    const before = await workerPid(s);
    const err = await s.engine.countTokens(prompt("hangcount")).catch((e) => e);
    expect(err).toBeInstanceOf(EngineTimeoutError);
    expect(await workerPid(s)).toBe(before);
    expect(isAlive(before)).toBe(true);
    expect(types((await collect(s.engine.generate(req("hi")))).events).at(-1)).toBe("done");
    expect(await s.engine.countTokens(prompt("abc"))).toBe(6);
    expect(await workerPid(s)).toBe(before);
    expect((await s.engine.stats()).restarts).toBe(0);
    expect(s.journal().filter((j) => j.cmd === "load" && j.role === "counter")).toHaveLength(2);
    expect(s.logs.some((l) => l.msg.includes("restarting the token counter"))).toBe(true);
  });

  test("a count that crashes the counter fails alone, with a short cause; stderr goes to the log", async () => {
    const s = setup();
    await s.engine.start();
    const before = await workerPid(s);
    const running = collect(s.engine.generate(req("slow", { maxTokens: 20 })));
    const err = await s.engine.countTokens(prompt("crashcount")).catch((e) => e);
    expect(err).toBeInstanceOf(WorkerCrashedError);
    expect((err as Error).message).toBe("the token counter crashed (exit code 4); see the server log");
    const ended = s.logs.find((l) => l.msg === "token counter ended");
    expect(JSON.stringify(ended?.fields?.stderr)).toContain(FAKE_SECRET);
    const gen = await running;
    expect(gen.error).toBeUndefined();
    expect(types(gen.events).at(-1)).toBe("done");
    expect(await s.engine.countTokens(prompt("abc"))).toBe(6);
    expect(await workerPid(s)).toBe(before);
  });
});

describe("token counter failures", () => {
  test("a counter that cannot load fails the waiting counts; generation is untouched", async () => {
    const s = setup({ restartBackoffMs: 50 }, { FAKE_WORKER_COUNTER_LOAD: "fail" });
    await s.engine.start();
    const err = await s.engine.countTokens(prompt("abc")).catch((e) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as Error).message).toContain("no tokenizer here");
    expect(s.logs.some((l) => l.msg === "token counter failed to start")).toBe(true);
    expect(types((await collect(s.engine.generate(req("hi")))).events).at(-1)).toBe("done");
    expect(await s.engine.countTokens(prompt("abc")).catch((e) => e)).toBeInstanceOf(EngineError); // tried again
    expect(s.journal().filter((j) => j.cmd === "load" && j.role === "counter")).toHaveLength(2);
  });
});

describe("the token count queue", () => {
  test("counts beyond queueLimit waiting -> EngineOverloadedError with retry-after; the rest are answered", async () => {
    const s = setup({ queueLimit: 2 }, { FAKE_WORKER_COUNT_MS: "300" });
    await s.engine.start();
    await s.engine.countTokens(prompt("warm"));
    // One runs, two wait, the fourth is refused at once.
    const counts = [1, 2, 3, 4].map(() => s.engine.countTokens(prompt("slowcount")).catch((e: unknown) => e));
    const results = await Promise.all(counts);
    expect(results.slice(0, 3)).toEqual([12, 12, 12]);
    const refused = results[3];
    expect(refused).toBeInstanceOf(EngineOverloadedError);
    const secs = (refused as EngineOverloadedError).retryAfterSeconds;
    expect(secs).toBeGreaterThanOrEqual(1);
    expect(secs).toBeLessThanOrEqual(60);
    // Generations have a queue of their own: a full count queue does not refuse them.
    expect(types((await collect(s.engine.generate(req("hi")))).events).at(-1)).toBe("done");
  });

  test("a count waiting longer than queueTimeoutMs -> EngineOverloadedError", async () => {
    const s = setup({ queueTimeoutMs: 200 }, { FAKE_WORKER_COUNT_MS: "1000" });
    await s.engine.start();
    await s.engine.countTokens(prompt("warm"));
    const first = s.engine.countTokens(prompt("slowcount"));
    const second = await s.engine.countTokens(prompt("waits")).catch((e) => e);
    expect(second).toBeInstanceOf(EngineOverloadedError);
    expect((second as Error).message).toContain("waited");
    expect(await first).toBe(12);
  });

  test("a count during start waits for the model's load, then the counter loads; stop ends both", async () => {
    const s = setup();
    expect(await s.engine.countTokens(prompt("abc")).catch((e) => e)).toBeInstanceOf(Error); // not started
    const starting = s.engine.start();
    expect(await s.engine.countTokens(prompt("abc"))).toBe(6);
    await starting;
    const loads = s.journal().filter((j) => j.cmd === "load");
    expect(loads.map((j) => j.role ?? "worker")).toEqual(["worker", "counter"]);
    await s.engine.stop();
    expect(await s.engine.countTokens(prompt("abc")).catch((e) => e)).toBeInstanceOf(Error);
    expect(s.journal().filter((j) => j.cmd === "shutdown").map((j) => j.role ?? "worker").sort()).toEqual(["counter", "worker"]);
  });
});
