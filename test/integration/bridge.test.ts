/**
 * MlxEngine against the real Python worker and the tiny random-weight model.
 * Python: $PENSIEVE_PYTHON, else ./.venv/bin/python, else /tmp/probe-venv/bin/python.
 */

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { MlxEngine, type MlxEngineOptions, engineTuning } from "../../src/bridge/mlx-engine";
import { serveDefaults } from "../../src/config";
import { EngineTimeoutError, PromptTooLongError, WorkerCrashedError } from "../../src/engine/errors";
import type { EngineEvent, GenerateRequest } from "../../src/engine/types";

// Spawns processes; a loaded 2-core machine can be slow.
setDefaultTimeout(120_000);

const REPO = resolve(import.meta.dir, "../..");
const SCRIPT = join(REPO, "python_bridge/mlx_inference.py");

function findPython(): string {
  const candidates = [process.env.PENSIEVE_PYTHON, join(REPO, ".venv/bin/python"), "/tmp/probe-venv/bin/python"];
  const found = candidates.find((p): p is string => !!p && existsSync(p));
  if (!found) throw new Error(`no Python with mlx-lm found (tried ${candidates.filter(Boolean).join(", ")})`);
  return found;
}

const PYTHON = findPython();
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
let dir = "";
let modelDir = "";
const engines: MlxEngine[] = [];

function makeEngine(opts: Partial<MlxEngineOptions> = {}): MlxEngine {
  const e = new MlxEngine({
    ...engineTuning(serveDefaults()),
    python: PYTHON,
    script: SCRIPT,
    model: modelDir,
    isDemo: true,
    logger: quiet,
    ...opts,
  });
  engines.push(e);
  return e;
}

function req(content: string, extra: Partial<GenerateRequest> = {}): GenerateRequest {
  return {
    requestId: `it_${Math.random().toString(36).slice(2)}`,
    messages: [
      { role: "system", content: "You are terse." },
      { role: "user", content },
    ],
    maxTokens: 8,
    // Greedy: the random model then never ends early on its own, so long runs really are long.
    temperature: 0,
    ...extra,
  };
}

async function collect(gen: AsyncIterable<EngineEvent>): Promise<{ events: EngineEvent[]; error?: unknown }> {
  const events: EngineEvent[] = [];
  try {
    for await (const ev of gen) events.push(ev);
  } catch (error) {
    return { events, error };
  }
  return { events };
}

/** started, progress*, text*, done — and nothing else, in that order. */
function expectProtocolOrder(events: EngineEvent[]): void {
  const shape = events.map((e) => e.type[0]).join("");
  expect(shape).toMatch(/^sp*t*d$/);
}

let engine: MlxEngine;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "pensieve-bridge-it-"));
  modelDir = join(dir, "tiny");
  const made = Bun.spawnSync([join(REPO, "scripts/make-tiny-model"), modelDir], {
    env: { ...process.env, PENSIEVE_PYTHON: PYTHON },
    stdout: "pipe",
    stderr: "pipe",
  });
  if (made.exitCode !== 0) throw new Error(`make-tiny-model failed: ${made.stderr.toString()}`);
  engine = makeEngine();
});

afterAll(async () => {
  await Promise.all(engines.map((e) => e.stop()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("MlxEngine with the real worker", () => {
  test("start loads the tiny model", async () => {
    const info = await engine.start();
    expect(info.id).toBe("tiny");
    expect(info.isDemo).toBe(true);
    expect(info.contextLength).toBeGreaterThan(0);
    expect(info.kvBytesPerToken).toBeGreaterThan(0);
    expect(engine.state()).toBe("ready");
  });

  test("generate streams started, progress, text, done; count_tokens equals promptTokens", async () => {
    const r = req("Hello, who are you?");
    const { events, error } = await collect(engine.generate(r));
    expect(error).toBeUndefined();
    expectProtocolOrder(events);
    const started = events[0] as Extract<EngineEvent, { type: "started" }>;
    const done = events.at(-1) as Extract<EngineEvent, { type: "done" }>;
    expect(done.finishReason).toBe("length");
    expect(done.completionTokens).toBe(8);
    expect(done.promptTokens).toBe(started.promptTokens);
    expect(await engine.countTokens({ messages: r.messages })).toBe(started.promptTokens);
  });

  test("stats report MLX memory, RSS and the worker pid", async () => {
    const stats = await engine.stats();
    expect(stats.state).toBe("ready");
    expect(stats.mlx).not.toBeNull();
    expect(stats.workerRssGb).toBeGreaterThan(0);
    expect(typeof stats.workerPid).toBe("number");
    await engine.clearCache();
  });

  test("a repeated prefix is served from the prompt cache; relieveMemory trims and drops it", async () => {
    const sys = "You are terse. ".repeat(40);
    const turn = (content: string) => req(content, { messages: [{ role: "system", content: sys }, { role: "user", content }] });
    await collect(engine.generate(turn("first question")));
    const second = await collect(engine.generate(turn("second question")));
    const started = second.events[0] as Extract<EngineEvent, { type: "started" }>;
    expect(started.cachedTokens).toBeGreaterThan(100);
    expect(second.events.at(-1)).toMatchObject({ type: "done", cachedTokens: started.cachedTokens });
    const cache = (await engine.stats()).promptCache;
    if (!cache) throw new Error("no promptCache in stats");
    expect(cache.entries).toBeGreaterThanOrEqual(1);
    expect(cache.hits).toBeGreaterThanOrEqual(1);
    expect(cache.tokensReused).toBeGreaterThanOrEqual(started.cachedTokens);
    await engine.relieveMemory("trim");
    expect((await engine.stats()).promptCache?.bytes).toBeLessThanOrEqual(cache.bytes / 2);
    await engine.relieveMemory("drop");
    expect((await engine.stats()).promptCache).toMatchObject({ entries: 0, bytes: 0 });
  });

  test("aborting a running generation cancels it in the worker", async () => {
    const ac = new AbortController();
    const events: EngineEvent[] = [];
    for await (const ev of engine.generate(req("Tell me a long story.", { maxTokens: 20_000 }), ac.signal)) {
      events.push(ev);
      if (ev.type === "started") ac.abort();
    }
    expectProtocolOrder(events);
    const done = events.at(-1) as Extract<EngineEvent, { type: "done" }>;
    expect(done.finishReason).toBe("cancelled");
    expect(done.completionTokens).toBeLessThan(20_000);
  });

  test("breaking out of the stream frees the worker for the next request", async () => {
    for await (const ev of engine.generate(req("Another long story.", { maxTokens: 20_000 }))) {
      if (ev.type === "text") break;
    }
    const next = await collect(engine.generate(req("Short one.")));
    expect(next.error).toBeUndefined();
    expectProtocolOrder(next.events);
  });

  test("a prompt longer than the context -> PromptTooLongError", async () => {
    const info = engine.model();
    if (!info) throw new Error("engine not started");
    const words = Array.from({ length: info.contextLength + 10 }, (_, i) => `w${i}`).join(" ");
    const { events, error } = await collect(engine.generate(req(words)));
    expect(events).toEqual([]);
    expect(error).toBeInstanceOf(PromptTooLongError);
    expect((error as PromptTooLongError).maxTokens).toBe(info.contextLength);
  });

  test("SIGKILL of the worker mid-stream -> WorkerCrashedError; a restarted worker serves the next request", async () => {
    const victim = (await engine.stats()).workerPid;
    if (victim === null) throw new Error("no worker pid");
    const events: EngineEvent[] = [];
    let error: unknown;
    try {
      for await (const ev of engine.generate(req("Keep going.", { maxTokens: 20_000 }))) {
        events.push(ev);
        if (ev.type === "text" && events.filter((e) => e.type === "text").length === 1) process.kill(victim, "SIGKILL");
      }
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(WorkerCrashedError);
    expect(events[0]?.type).toBe("started");
    expect(events.some((e) => e.type === "done")).toBe(false);

    const next = await collect(engine.generate(req("Are you back?")));
    expect(next.error).toBeUndefined();
    expectProtocolOrder(next.events);
    const stats = await engine.stats();
    expect(stats.restarts).toBe(1);
    expect(stats.workerPid).not.toBe(victim);
    expect(stats.state).toBe("ready");
  });
});

/** A prompt whose rendering and tokenizing take the tiny model's tokenizer about a second or more. */
const bigPrompt = () => [{ role: "user" as const, content: Array.from({ length: 250_000 }, (_, i) => `w${i}`).join(" ") }];

describe("MlxEngine with the real worker: token counts beside generation", () => {
  test("a big count_tokens during a stream does not stall the stream", async () => {
    await engine.start();
    await engine.countTokens({ messages: [{ role: "user", content: "warm up the counter" }] });
    const ac = new AbortController();
    const arrivals: number[] = [];
    let counting: Promise<{ start: number; end: number; n: number }> | null = null;
    for await (const ev of engine.generate(req("Tell me everything.", { maxTokens: 100_000 }), ac.signal)) {
      if (ev.type !== "text") continue;
      arrivals.push(performance.now());
      counting ??= (async () => {
        const start = performance.now();
        const n = await engine.countTokens({ messages: bigPrompt() });
        return { start, end: performance.now(), n };
      })().finally(() => ac.abort());
    }
    const count = await (counting as NonNullable<typeof counting>);
    expect(count.n).toBeGreaterThan(250_000);
    const during = arrivals.filter((t) => t > count.start && t < count.end);
    const marks = [count.start, ...during, count.end];
    const gaps = marks.slice(1).map((t, i) => t - (marks[i] as number));
    // Before: the worker tokenized between two tokens, so nothing came until the count was done.
    expect(during.length).toBeGreaterThanOrEqual(10);
    expect(Math.max(...gaps)).toBeLessThan((count.end - count.start) / 2);
  });

  test("a count over the timeout fails alone: the model worker is not killed and keeps generating", async () => {
    const e = makeEngine({ commandTimeoutMs: 300 });
    await e.start();
    const pid = (await e.stats()).workerPid;
    const err = await e.countTokens({ messages: bigPrompt() }).catch((x) => x);
    expect(err).toBeInstanceOf(EngineTimeoutError);
    const after = await e.stats();
    expect(after.workerPid).toBe(pid);
    expect(after.restarts).toBe(0);
    const { events, error } = await collect(e.generate(req("Still there?")));
    expect(error).toBeUndefined();
    expectProtocolOrder(events);
    // A fresh counter serves the next count.
    expect(await e.countTokens({ messages: req("Still there?").messages })).toBe((events[0] as { promptTokens: number }).promptTokens);
    await e.stop();
  });
});

describe("MlxEngine with the real worker under injected faults", () => {
  test("a worker crash: a short cause for clients, the worker's last stderr lines for the log", async () => {
    const logs: { msg: string; fields?: Record<string, unknown> }[] = [];
    const keep = (msg: string, fields?: Record<string, unknown>) => void logs.push({ msg, fields });
    const e = makeEngine({ env: { PENSIEVE_WORKER_FAULT: "crash" }, logger: { debug: keep, info: keep, warn: keep, error: keep } });
    await e.start();
    const pid = (await e.stats()).workerPid;
    const { events, error } = await collect(e.generate(req("hi", { maxTokens: 50 })));
    expect(events[0]?.type).toBe("started");
    expect(error).toBeInstanceOf(WorkerCrashedError);
    expect((error as Error).message).toBe("the model worker crashed (exit code 70); see the server log");
    expect((error as WorkerCrashedError).stderrTail.join("\n")).toContain("fault injection: crashing now");
    const ended = logs.filter((l) => l.msg === "model worker ended");
    expect(ended).toHaveLength(1);
    expect(ended[0]?.fields?.pid).toBe(pid);
    expect(JSON.stringify(ended[0]?.fields?.stderr)).toContain("fault injection: crashing now");
    await e.stop();
  });

  test("stray prints to stdout inside the worker do not corrupt the protocol", async () => {
    const e = makeEngine({ env: { PENSIEVE_WORKER_FAULT: "noise" } });
    await e.start();
    const r = req("hi");
    const { events, error } = await collect(e.generate(r));
    expect(error).toBeUndefined();
    expectProtocolOrder(events);
    expect(await e.countTokens({ messages: r.messages })).toBe((events[0] as { promptTokens: number }).promptTokens);
    expect((await e.stats()).restarts).toBe(0);
    await e.stop();
  });
});
