import { describe, expect, setDefaultTimeout, test } from "bun:test";
import {
  EngineBadRequestError,
  EngineError,
  EngineTimeoutError,
  PromptTooLongError,
  WorkerCrashedError,
} from "../../../src/engine/errors";
import type { EngineEvent } from "../../../src/engine/types";
import { type FakeSetup, collect, fakeEngines, isAlive, req, types } from "./helpers";

// Spawns processes; a loaded 2-core machine can be slow.
setDefaultTimeout(30_000);

const setup = fakeEngines();

async function pid(s: FakeSetup): Promise<number> {
  const p = (await s.engine.stats()).workerPid;
  if (p === null) throw new Error("no worker pid");
  return p;
}

describe("MlxEngine with a fake worker: worker errors", () => {
  test("prompt_too_long maps to PromptTooLongError, before any event, worker kept", async () => {
    const s = setup();
    await s.engine.start();
    const before = await pid(s);
    const { events, error } = await collect(s.engine.generate(req("too_long")));
    expect(events).toEqual([]);
    expect(error).toBeInstanceOf(PromptTooLongError);
    const e = error as PromptTooLongError;
    expect([e.promptTokens, e.maxTokens]).toEqual([5000, 2048]);
    // Neutral: Anthropic's wording is the API layer's (mapError).
    expect(e.message).toBe("prompt has 5000 tokens; the context holds 2048");
    expect(await pid(s)).toBe(before);
    expect(types((await collect(s.engine.generate(req("hi")))).events).at(-1)).toBe("done");
  });

  test("bad_request -> EngineBadRequestError; other codes -> plain EngineError", async () => {
    const s = setup();
    await s.engine.start();
    const bad = await collect(s.engine.generate(req("bad")));
    expect(bad.error).toBeInstanceOf(EngineBadRequestError);
    expect((bad.error as Error).message).toContain("temperature out of range");
    const internal = await collect(s.engine.generate(req("internal")));
    expect(internal.error).toBeInstanceOf(EngineError);
    expect(internal.error).not.toBeInstanceOf(EngineBadRequestError);
    expect(internal.error).not.toBeInstanceOf(WorkerCrashedError);
    expect((await s.engine.stats()).restarts).toBe(0);
  });
});

describe("MlxEngine with a fake worker: crashes and restarts", () => {
  test("crash mid-stream -> WorkerCrashedError with a short cause, stderr logged once; next request gets a new worker", async () => {
    const s = setup();
    await s.engine.start();
    const before = await pid(s);
    const { events, error } = await collect(s.engine.generate(req("crash")));
    expect(types(events)).toEqual(["started", "progress", "text", "text"]);
    expect(error).toBeInstanceOf(WorkerCrashedError);
    const e = error as WorkerCrashedError;
    expect(e.stderrTail).toContain("simulated crash: boom");
    expect(e.message).toBe("the model worker crashed (exit code 3); see the server log");
    const ended = s.logs.filter((l) => l.msg === "model worker ended");
    expect(ended).toHaveLength(1);
    expect(ended[0]?.fields).toMatchObject({ pid: before, stderr: expect.arrayContaining(["simulated crash: boom"]) });

    const next = await collect(s.engine.generate(req("hi")));
    expect(next.error).toBeUndefined();
    expect(types(next.events).at(-1)).toBe("done");
    const stats = await s.engine.stats();
    expect(stats.restarts).toBe(1);
    expect(stats.state).toBe("ready");
    expect(stats.workerPid).not.toBe(before);
  });

  test("SIGKILL of the worker mid-stream -> WorkerCrashedError; restart serves the next request", async () => {
    const s = setup();
    await s.engine.start();
    const victim = await pid(s);
    const events: EngineEvent[] = [];
    let error: unknown;
    try {
      for await (const ev of s.engine.generate(req("slow", { maxTokens: 100_000 }))) {
        events.push(ev);
        if (ev.type === "text" && events.filter((x) => x.type === "text").length === 1) process.kill(victim, "SIGKILL");
      }
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(WorkerCrashedError);
    expect((error as Error).message).toContain("SIGKILL");
    expect(types(events).slice(0, 3)).toEqual(["started", "progress", "text"]);
    const next = await collect(s.engine.generate(req("hi")));
    expect(types(next.events).at(-1)).toBe("done");
    expect(await pid(s)).not.toBe(victim);
  });

  test("a non-JSON stdout line is a protocol error: logged, treated as a crash, restarted", async () => {
    const s = setup();
    await s.engine.start();
    const before = await pid(s);
    const { error } = await collect(s.engine.generate(req("garbage")));
    expect(error).toBeInstanceOf(WorkerCrashedError);
    expect((error as Error).message).toBe("the model worker broke protocol; see the server log");
    // What stdout carried may be prompt text: the log has it, the error does not.
    const broke = s.logs.find((l) => l.level === "error" && l.msg === "model worker broke protocol");
    expect(String(broke?.fields?.reason)).toContain("this is not json");
    expect(types((await collect(s.engine.generate(req("hi")))).events).at(-1)).toBe("done");
    expect(await pid(s)).not.toBe(before);
    expect(isAlive(before)).toBe(false);
  });

  test("a hung worker -> EngineTimeoutError, the worker is killed and replaced", async () => {
    const s = setup({ requestTimeoutMs: 1000 });
    await s.engine.start();
    const before = await pid(s);
    const { events, error } = await collect(s.engine.generate(req("hang")));
    expect(types(events)).toEqual(["started", "progress"]);
    expect(error).toBeInstanceOf(EngineTimeoutError);
    const next = await collect(s.engine.generate(req("hi")));
    expect(next.error).toBeUndefined();
    expect(types(next.events).at(-1)).toBe("done");
    expect(await pid(s)).not.toBe(before);
    expect(isAlive(before)).toBe(false);
    expect((await s.engine.stats()).restarts).toBe(1);
  });

  test("queued requests survive a crash of the running one and are served by the new worker", async () => {
    const s = setup();
    await s.engine.start();
    const crashing = collect(s.engine.generate(req("crash")));
    const queued = collect(s.engine.generate(req("after")));
    expect((await crashing).error).toBeInstanceOf(WorkerCrashedError);
    const after = await queued;
    expect(after.error).toBeUndefined();
    expect(types(after.events).at(-1)).toBe("done");
  });
});

describe("MlxEngine with a fake worker: start and stop failures", () => {
  test("a worker that dies before hello -> WorkerCrashedError with its stderr, state failed", async () => {
    const s = setup({}, { FAKE_WORKER_START: "crash" });
    const err = await s.engine.start().catch((e) => e);
    expect(err).toBeInstanceOf(WorkerCrashedError);
    expect((err as WorkerCrashedError).stderrTail.join("\n")).toContain("cannot import mlx");
    expect(s.engine.state()).toBe("failed");
  });

  test("a missing interpreter -> WorkerCrashedError naming it", async () => {
    const s = setup({ python: "/nonexistent/python3" });
    const err = await s.engine.start().catch((e) => e);
    expect(err).toBeInstanceOf(WorkerCrashedError);
    expect((err as Error).message).toContain("/nonexistent/python3");
    expect(s.engine.state()).toBe("failed");
  });

  test("a worker that never says hello -> WorkerCrashedError after helloTimeoutMs", async () => {
    const s = setup({ helloTimeoutMs: 300 }, { FAKE_WORKER_START: "silent" });
    const err = await s.engine.start().catch((e) => e);
    expect(err).toBeInstanceOf(WorkerCrashedError);
    expect((err as Error).message).toContain("hello");
  });

  test("a failing load rejects start with the worker's message", async () => {
    const s = setup({}, { FAKE_WORKER_LOAD: "fail" });
    const err = await s.engine.start().catch((e) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as Error).message).toContain("no such model");
    expect(s.engine.state()).toBe("failed");
  });

  test("stop escalates to SIGTERM/SIGKILL for a worker that ignores shutdown", async () => {
    const s = setup({ stopGraceMs: 200 }, { FAKE_WORKER_STUBBORN: "1" });
    await s.engine.start();
    const p = await pid(s);
    await s.engine.stop();
    expect(isAlive(p)).toBe(false);
    expect(s.logs.some((l) => l.msg.includes("SIGKILL"))).toBe(true);
    expect((await s.engine.stats()).workerPid).toBeNull();
  });

  test("stop during a generation ends it and stops the worker", async () => {
    const s = setup();
    await s.engine.start();
    const p = await pid(s);
    const it = s.engine.generate(req("slow", { maxTokens: 100_000 }))[Symbol.asyncIterator]();
    expect((await it.next()).value).toMatchObject({ type: "started" });
    await s.engine.stop();
    const rest: EngineEvent[] = [];
    let error: unknown;
    try {
      for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value);
    } catch (e) {
      error = e;
    }
    // Either the cancel landed (done{cancelled}) or the worker was gone first (an EngineError).
    const last = rest.at(-1);
    expect(error instanceof EngineError || (last?.type === "done" && last.finishReason === "cancelled")).toBe(true);
    expect(isAlive(p)).toBe(false);
  });
});
