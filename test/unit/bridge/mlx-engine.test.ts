import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { EngineError, EngineOverloadedError } from "../../../src/engine/errors";
import type { EngineEvent } from "../../../src/engine/types";
import { collect, fakeEngines, req, types, until } from "./helpers";

// Spawns processes; a loaded 2-core machine can be slow.
setDefaultTimeout(30_000);

const setup = fakeEngines();

/** Starts iterating a generation in the background (which enqueues it) and records its events. */
function background(gen: AsyncGenerator<EngineEvent>, label = "", log: string[] = []) {
  const events: EngineEvent[] = [];
  const finished = (async () => {
    for await (const ev of gen) {
      events.push(ev);
      log.push(`${label}:${ev.type}`);
    }
  })();
  return { events, finished };
}

describe("MlxEngine with a fake worker: start and generate", () => {
  test("start loads the model and reports it", async () => {
    const { engine } = setup({ isDemo: true });
    expect(engine.state()).toBe("stopped");
    const info = await engine.start();
    expect(info).toEqual({
      id: "fake-model",
      path: "fake-model",
      contextLength: 2048,
      isDemo: true,
      supportsVision: false,
      kvBytesPerToken: 4096,
    });
    expect(engine.state()).toBe("ready");
    expect(engine.model()).toEqual(info);
    const stats = await engine.stats();
    expect(stats).toMatchObject({ state: "ready", queued: 0, running: 0, restarts: 0, workerRssGb: 0.05 });
    expect(stats.mlx).toEqual({ activeGb: 0.01, cacheGb: 0, peakGb: 0.02 });
    expect(typeof stats.workerPid).toBe("number");
  });

  test("events come in protocol order and count_tokens matches started.promptTokens", async () => {
    const { engine } = setup();
    await engine.start();
    const r = req("hello there");
    const { events, error } = await collect(engine.generate(r));
    expect(error).toBeUndefined();
    expect(types(events)).toEqual(["started", "progress", "text", "text", "text", "text", "text", "done"]);
    const started = events[0] as Extract<EngineEvent, { type: "started" }>;
    expect(await engine.countTokens({ messages: r.messages })).toBe(started.promptTokens);
    expect(events.at(-1)).toEqual({
      type: "done",
      finishReason: "stop",
      promptTokens: started.promptTokens,
      completionTokens: 5,
      cachedTokens: 0,
      cacheCreatedTokens: 0,
    });
  });

  test("max_tokens reached maps to finishReason length; multi-byte text passes intact", async () => {
    const { engine } = setup();
    await engine.start();
    const short = await collect(engine.generate(req("hi", { maxTokens: 2 })));
    expect(short.events.at(-1)).toMatchObject({ type: "done", finishReason: "length", completionTokens: 2 });
    const utf8 = await collect(engine.generate(req("utf8")));
    const text = utf8.events.flatMap((e) => (e.type === "text" ? [e.text] : [])).join("");
    expect(text).toBe("h\u00e9llo \u{1F30D} \u4e16\u754c");
  });

  test("generate before start, or after stop, fails with EngineError", async () => {
    const { engine } = setup();
    expect((await collect(engine.generate(req("hi")))).error).toBeInstanceOf(EngineError);
    await engine.start();
    await engine.stop();
    expect(engine.state()).toBe("stopped");
    expect((await collect(engine.generate(req("hi")))).error).toBeInstanceOf(EngineError);
  });

  test("clearCache and stats answer; count_tokens answers while a generation runs", async () => {
    const { engine } = setup();
    await engine.start();
    await engine.clearCache();
    const log: string[] = [];
    const slow = background(engine.generate(req("slow", { maxTokens: 10 })), "slow", log);
    await until(() => log.includes("slow:text"), "first token");
    const n = await engine.countTokens({ messages: [{ role: "user", content: "abc" }] });
    expect(n).toBe(6);
    expect(log.includes("slow:done")).toBe(false);
    expect((await engine.stats()).running).toBe(1);
    await slow.finished;
    expect(slow.events.at(-1)).toMatchObject({ type: "done", finishReason: "length", completionTokens: 10 });
  });
});

describe("MlxEngine with a fake worker: queue", () => {
  test("requests run one at a time, in FIFO order", async () => {
    const { engine, journal } = setup();
    await engine.start();
    const log: string[] = [];
    const jobs = [
      background(engine.generate(req("slow", { maxTokens: 4 })), "a", log),
      background(engine.generate(req("b")), "b", log),
      background(engine.generate(req("c")), "c", log),
      background(engine.generate(req("d")), "d", log),
    ];
    await Promise.all(jobs.map((j) => j.finished));
    const lifecycle = log.filter((l) => l.endsWith(":started") || l.endsWith(":done"));
    expect(lifecycle).toEqual(["a:started", "a:done", "b:started", "b:done", "c:started", "c:done", "d:started", "d:done"]);
    expect(journal().filter((j) => j.cmd === "generate").length).toBe(4);
  });

  test("more than queueLimit waiting -> EngineOverloadedError with retry-after", async () => {
    const { engine } = setup({ queueLimit: 1 });
    await engine.start();
    const ac = new AbortController();
    const a = background(engine.generate(req("slow", { maxTokens: 100_000 }), ac.signal));
    const b = background(engine.generate(req("b")));
    const c = await collect(engine.generate(req("c")));
    expect(c.events).toEqual([]);
    expect(c.error).toBeInstanceOf(EngineOverloadedError);
    const retry = (c.error as EngineOverloadedError).retryAfterSeconds;
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect((await engine.stats()).queued).toBe(1);
    ac.abort();
    await a.finished;
    await b.finished;
    expect(a.events.at(-1)).toMatchObject({ type: "done", finishReason: "cancelled" });
    expect(types(b.events).at(-1)).toBe("done");
  });

  test("waiting longer than queueTimeoutMs -> EngineOverloadedError", async () => {
    const { engine } = setup({ queueTimeoutMs: 150 });
    await engine.start();
    const ac = new AbortController();
    const a = background(engine.generate(req("slow", { maxTokens: 100_000 }), ac.signal));
    const b = await collect(engine.generate(req("b")));
    expect(b.error).toBeInstanceOf(EngineOverloadedError);
    expect((b.error as Error).message).toContain("waited");
    ac.abort();
    await a.finished;
    expect((await engine.stats()).queued).toBe(0);
  });
});

describe("MlxEngine with a fake worker: cancellation", () => {
  test("aborting while queued removes the request; it never reaches the worker", async () => {
    const { engine, journal } = setup();
    await engine.start();
    const acA = new AbortController();
    const acB = new AbortController();
    const a = background(engine.generate(req("slow", { maxTokens: 100_000 }), acA.signal));
    const b = background(engine.generate(req("b"), acB.signal));
    expect((await engine.stats()).queued).toBe(1);
    acB.abort();
    await b.finished;
    expect(b.events).toEqual([]);
    expect((await engine.stats()).queued).toBe(0);
    acA.abort();
    await a.finished;
    expect(journal().filter((j) => j.cmd === "generate").length).toBe(1);
  });

  test("an already-aborted signal yields nothing", async () => {
    const { engine, journal } = setup();
    await engine.start();
    const { events, error } = await collect(engine.generate(req("hi"), AbortSignal.abort()));
    expect(events).toEqual([]);
    expect(error).toBeUndefined();
    expect(journal().filter((j) => j.cmd === "generate").length).toBe(0);
  });

  test("aborting while running sends cancel; the stream ends with done{cancelled}", async () => {
    const { engine, journal } = setup();
    await engine.start();
    const ac = new AbortController();
    const events: EngineEvent[] = [];
    for await (const ev of engine.generate(req("slow", { maxTokens: 100_000 }), ac.signal)) {
      events.push(ev);
      if (ev.type === "text") ac.abort();
    }
    expect(events[0]?.type).toBe("started");
    expect(events.at(-1)).toMatchObject({ type: "done", finishReason: "cancelled" });
    const gen = journal().find((j) => j.cmd === "generate");
    const cancels = journal().filter((j) => j.cmd === "cancel");
    expect(cancels.map((c) => c.target)).toEqual([gen?.id as string]);
  });

  test("breaking out of for-await cancels the generation and frees the worker", async () => {
    const { engine, journal } = setup();
    await engine.start();
    for await (const ev of engine.generate(req("slow", { maxTokens: 100_000 }))) {
      if (ev.type === "text") break;
    }
    // Would wait ~30 minutes behind the first generation if it were not cancelled.
    const next = await collect(engine.generate(req("next")));
    expect(next.error).toBeUndefined();
    expect(types(next.events).at(-1)).toBe("done");
    const gens = journal().filter((j) => j.cmd === "generate");
    const cancels = journal().filter((j) => j.cmd === "cancel");
    expect(cancels.map((c) => c.target)).toEqual([gens[0]?.id as string]);
  });
});
