/**
 * The Ctrl-C/SIGTERM drain, in process: new work gets 503, running work may finish within
 * the window, what is left ends with a retryable error (never message_stop), then exit 0.
 */
import { describe, expect, test } from "bun:test";
import { createGracefulShutdown, type GracefulDeps } from "../../../src/lifecycle/graceful";
import { GuardState } from "../../../src/lifecycle/guard-state";
import { memoryInfo } from "../../../src/lifecycle/memory-info";
import { FakeMemoryMonitor } from "../../support/fake-memory";
import { RecordingLogger } from "../../support/memory-kit";
import { chunkText, makeApp, parseSse, postMessages, simpleBody } from "../app/harness";

/** A shutdown over `state` whose stop and exit are recorded; `exited` resolves with the code. */
function harness(state: GuardState, over: Partial<GracefulDeps> = {}) {
  const calls: string[] = [];
  let onExit: (code: number) => void = () => {};
  const exited = new Promise<number>((resolve) => (onExit = resolve));
  const log = new RecordingLogger();
  const shutdown = createGracefulShutdown({
    log,
    state,
    drainMs: 1000,
    flushMs: 200,
    stop: async () => {
      calls.push("stop");
    },
    exit: (code) => {
      calls.push(`exit:${code}`);
      onExit(code);
    },
    ...over,
  });
  return { shutdown, calls, exited, log };
}

describe("createGracefulShutdown", () => {
  test("nothing in flight: stops and exits 0 at once", async () => {
    const state = new GuardState();
    const { shutdown, calls } = harness(state);
    await shutdown.signal("SIGTERM");
    expect(calls).toEqual(["stop", "exit:0"]);
    expect(state.accepting()).toBe(false);
  });

  test("work that finishes within the window is left alone", async () => {
    const state = new GuardState();
    const entry = state.inflight.register("req_a");
    const { shutdown, calls } = harness(state);
    const done = shutdown.signal("SIGTERM");
    expect(shutdown.phase()).toBe("draining");
    expect(state.shutdown()?.phase).toBe("draining");
    await Bun.sleep(20);
    expect(calls).toEqual([]);
    state.inflight.unregister(entry);
    await done;
    expect(entry.controller.signal.aborted).toBe(false);
    expect(calls).toEqual(["stop", "exit:0"]);
    expect(state.shutdown()?.phase).toBe("stopping");
  });

  test("work still running when the window ends is aborted with a retryable reason", async () => {
    const state = new GuardState();
    const entry = state.inflight.register("req_b");
    entry.controller.signal.addEventListener("abort", () => state.inflight.unregister(entry));
    const { shutdown, calls } = harness(state, { drainMs: 30 });
    await shutdown.signal("SIGTERM");
    expect(entry.controller.signal.aborted).toBe(true);
    expect(String((entry.controller.signal.reason as Error).message)).toContain("30 ms drain window");
    expect(calls).toEqual(["stop", "exit:0"]);
  });

  test("a second signal ends the drain at once; a failing stop still exits 0", async () => {
    const state = new GuardState();
    const entry = state.inflight.register("req_c");
    const stop = async () => {
      throw new Error("worker stuck");
    };
    const { shutdown, calls, log } = harness(state, { drainMs: 60_000, stop });
    const first = shutdown.signal("SIGTERM");
    await Bun.sleep(10);
    const t0 = performance.now();
    const second = shutdown.signal("SIGINT");
    expect(second).toBe(first);
    await first;
    expect(performance.now() - t0).toBeLessThan(5000);
    expect((entry.controller.signal.reason as Error).message).toContain("a second SIGINT ended the drain");
    expect(calls).toEqual(["exit:0"]);
    expect(log.text()).toContain("worker stuck");
  });

  test("/health's memory fields say draining, with the time left, then stopping", async () => {
    const monitor = new FakeMemoryMonitor();
    const state = new GuardState();
    expect(memoryInfo({ monitor, state }).shutdown).toBeUndefined();
    const entry = state.inflight.register("req_d");
    const { shutdown } = harness(state, { drainMs: 10_000, now: () => 1_000 });
    const done = shutdown.signal("SIGTERM");
    const info = memoryInfo({ monitor, state, now: () => 4_000 });
    expect(info.accepting).toBe(false);
    expect(info.shutdown).toEqual({ phase: "draining", reason: "SIGTERM", drain_left_ms: 7_000 });
    state.inflight.unregister(entry);
    await done;
    expect(memoryInfo({ monitor, state }).shutdown).toEqual({ phase: "stopping", reason: "SIGTERM", drain_left_ms: 0 });
  });
});

describe("the drain through the app", () => {
  const hold = [
    { type: "started" as const, promptTokens: 5, cachedTokens: 0 },
    { type: "text" as const, text: "partial" },
    { type: "hold" as const },
    { type: "text" as const, text: " rest" },
    { type: "done" as const, finishReason: "stop" as const, promptTokens: 5, completionTokens: 2, cachedTokens: 0 },
  ];

  async function openStream(h: ReturnType<typeof makeApp>) {
    const res = await postMessages(h, simpleBody({ stream: true }));
    const reader = res.body!.getReader();
    let text = "";
    // Read until the first text delta: the generation is running.
    while (!text.includes("text_delta")) text += chunkText((await reader.read()).value);
    const rest = (async () => {
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += chunkText(r.value);
      return parseSse(text);
    })();
    return { res, rest };
  }

  test("new requests get 503 with retry-after; a stream past the window ends with event: error", async () => {
    const h = makeApp({ engine: { script: hold } });
    const state = h.state;
    const { rest } = await openStream(h);
    const { shutdown, exited } = harness(state, { drainMs: 50 });
    void shutdown.signal("SIGTERM");
    const refused = await postMessages(h, simpleBody());
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(refused.headers.get("x-should-retry")).toBe("true");
    expect(((await refused.json()) as { error: { type: string } }).error.type).toBe("overloaded_error");
    const events = await rest;
    const names = events.map((e) => e.event);
    expect(names).not.toContain("message_stop");
    expect(names.at(-1)).toBe("error");
    expect((events.at(-1)!.data as unknown as { error: { type: string } }).error.type).toBe("overloaded_error");
    expect(await exited).toBe(0);
  });

  test("a JSON request past the window gets a 503, not a fragment", async () => {
    const h = makeApp({ engine: { script: hold } });
    const state = h.state;
    const pending = postMessages(h, simpleBody());
    while (h.engine.running === 0) await Bun.sleep(5);
    const { shutdown, exited } = harness(state, { drainMs: 50 });
    void shutdown.signal("SIGTERM");
    const res = await pending;
    expect(res.status).toBe(503);
    expect(res.headers.get("x-should-retry")).toBe("true");
    expect(await exited).toBe(0);
  });

  test("a stream that finishes within the window completes with message_stop", async () => {
    const h = makeApp({ engine: { script: hold } });
    const state = h.state;
    const { rest } = await openStream(h);
    const { shutdown, exited } = harness(state, { drainMs: 10_000 });
    void shutdown.signal("SIGTERM");
    await Bun.sleep(20);
    h.engine.release();
    const events = await rest;
    expect(events.map((e) => e.event).at(-1)).toBe("message_stop");
    expect(events.find((e) => e.event === "message_delta")!.data).toMatchObject({ delta: { stop_reason: "end_turn" } });
    expect(await exited).toBe(0);
  });
});
