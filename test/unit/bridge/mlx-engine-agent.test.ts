/** MlxEngine's agent features against the fake worker: tool calls, thinking, prompt cache, concurrency. */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { generatePayload, toEngineEvent } from "../../../src/bridge/generation-job";
import { promptFields } from "../../../src/bridge/worker-info";
import { EngineOverloadedError } from "../../../src/engine/errors";
import { createMemoryRelief } from "../../../src/lifecycle/relief";
import { FakeMemoryMonitor } from "../../support/fake-memory";
import type { EngineEvent, ToolSpec } from "../../../src/engine/types";
import { collect, fakeEngines, req, types, until } from "./helpers";

setDefaultTimeout(30_000);

const setup = fakeEngines();

const BASH: ToolSpec = { type: "function", function: { name: "Bash", parameters: { type: "object" } } };

function background(gen: AsyncGenerator<EngineEvent>, label: string, log: string[]) {
  const events: EngineEvent[] = [];
  let error: unknown;
  const finished = (async () => {
    try {
      for await (const ev of gen) {
        events.push(ev);
        log.push(`${label}:${ev.type}`);
      }
    } catch (e) {
      error = e;
      log.push(`${label}:error`);
    }
  })();
  return { events, finished, error: () => error };
}

describe("tool calls and thinking", () => {
  test("tool_choice and parallel_tool_calls reach the worker; tool_call events carry no id (the API layer mints it)", async () => {
    const { engine, journal } = setup();
    await engine.start();
    const { events, error } = await collect(
      engine.generate(req("tool", { tools: [BASH], toolChoice: { name: "Bash" }, parallelToolCalls: false })),
    );
    expect(error).toBeUndefined();
    expect(types(events)).toEqual(["started", "progress", "text", "tool_call", "done"]);
    const call = events[3] as Extract<EngineEvent, { type: "tool_call" }>;
    expect("id" in call).toBe(false);
    expect(call.name).toBe("Bash");
    expect(call.arguments).toEqual({ command: "echo pensieve-tool-ok", description: "Print a marker" });
    expect(events.at(-1)).toMatchObject({ type: "done", finishReason: "tool_calls" });
    const gen = journal().find((j) => j.cmd === "generate");
    expect(gen).toMatchObject({ tool_choice: { name: "Bash" }, parallel_tool_calls: false, tools: 1 });
  });

  test("several calls in one turn; tool_choice left out when the request has none", async () => {
    const { engine, journal } = setup();
    await engine.start();
    const { events } = await collect(engine.generate(req("tools2", { tools: [BASH] })));
    expect(types(events).filter((t) => t === "tool_call").length).toBe(2);
    const gen = journal().find((j) => j.cmd === "generate");
    expect(gen?.tool_choice).toBeUndefined();
    expect(gen?.parallel_tool_calls).toBeUndefined();
  });

  test("thinking events map to engine thinking events", async () => {
    const { engine } = setup();
    await engine.start();
    const on = await collect(engine.generate(req("think", { enableThinking: true })));
    expect(types(on.events)).toEqual(["started", "progress", "thinking", "thinking", "text", "done"]);
    expect(on.events.filter((e) => e.type === "thinking").map((e) => (e as { text: string }).text).join("")).toBe("Let me think.");
    const off = await collect(engine.generate(req("think")));
    expect(types(off.events)).toEqual(["started", "progress", "text", "done"]);
  });

  test("toEngineEvent: string arguments are parsed, an older worker's call_id is dropped, non-objects become {}", () => {
    const a = toEngineEvent({ v: 1, type: "tool_call", id: "1", name: "f", arguments: '{"x":1}' });
    expect(a).toEqual({ type: "tool_call", name: "f", arguments: { x: 1 } });
    expect(toEngineEvent({ v: 1, type: "tool_call", id: "1", call_id: "toolu_a", name: "f", arguments: [1] })).toEqual({
      type: "tool_call",
      name: "f",
      arguments: {},
    });
    expect(toEngineEvent({ v: 1, type: "thinking", id: "1", text: "hm" })).toEqual({ type: "thinking", text: "hm" });
  });

  test("continue_final is always sent to the worker, so it follows the server's prefill decision", () => {
    const messages = [{ role: "user" as const, content: "hi" }, { role: "assistant" as const, content: "Sure," }];
    expect(generatePayload({ requestId: "r", maxTokens: 5, messages, continueFinal: true }).continue_final).toBe(true);
    expect(generatePayload({ requestId: "r", maxTokens: 5, messages: messages.slice(0, 1) }).continue_final).toBe(false);
    expect(promptFields({ messages, continueFinal: true }).continue_final).toBe(true);
    expect(promptFields({ messages: messages.slice(0, 1) }).continue_final).toBe(false);
  });

  test("capabilities come from the worker's loaded reply", async () => {
    const { engine } = setup({}, { FAKE_WORKER_CONCURRENCY: "2" });
    await engine.start();
    expect(engine.capabilities()).toEqual({ maxConcurrency: 2, hasToolCalling: true, toolParser: "json_tools", hasThinking: true });
  });
});

describe("prompt-prefix cache", () => {
  const turn = (last: string) => req(last, { messages: [{ role: "system", content: "a long system prompt" }, { role: "user", content: last }] });

  test("a repeated prefix reports cachedTokens, and stats expose the cache", async () => {
    const { engine } = setup();
    await engine.start();
    const first = await collect(engine.generate(turn("one")));
    expect(first.events[0]).toMatchObject({ type: "started", cachedTokens: 0 });
    const second = await collect(engine.generate(turn("two")));
    const cached = (second.events[0] as Extract<EngineEvent, { type: "started" }>).cachedTokens;
    expect(cached).toBeGreaterThan(0);
    expect(second.events.at(-1)).toMatchObject({ type: "done", cachedTokens: cached });
    const stats = await engine.stats();
    expect(stats.promptCache).toMatchObject({ entries: 1, hits: 1, misses: 1, tokensReused: cached, maxEntries: 4 });
    expect(stats.promptCache?.bytes).toBeGreaterThan(0);
  });

  test("relieveMemory sends cache_relieve: trim keeps part, drop empties", async () => {
    const { engine, journal } = setup();
    await engine.start();
    for (const sys of ["a", "b", "c", "d"]) {
      await collect(engine.generate(req("x", { messages: [{ role: "system", content: sys }, { role: "user", content: "x" }] })));
    }
    expect((await engine.stats()).promptCache?.entries).toBe(4);
    await engine.relieveMemory("trim");
    expect((await engine.stats()).promptCache?.entries).toBe(2);
    await engine.relieveMemory("drop");
    expect((await engine.stats()).promptCache?.entries).toBe(0);
    expect(journal().filter((j) => j.cmd === "cache_relieve").map((j) => j.level)).toEqual(["trim", "drop"]);
  });

  test("eviction under a fake memory monitor: trimmed at Caution, dropped at Warning", async () => {
    const { engine } = setup();
    await engine.start();
    for (const sys of ["a", "b", "c", "d"]) {
      await collect(engine.generate(req("x", { messages: [{ role: "system", content: sys }, { role: "user", content: "x" }] })));
    }
    const monitor = new FakeMemoryMonitor();
    const relief = createMemoryRelief({ monitor, engine });
    await relief.check();
    expect((await engine.stats()).promptCache?.entries).toBe(4);
    monitor.set("caution", 2.5);
    await relief.check();
    expect((await engine.stats()).promptCache?.entries).toBe(2);
    monitor.set("warning", 1.5);
    await relief.check();
    expect((await engine.stats()).promptCache?.entries).toBe(0);
  });

  test("relieveMemory is answered during a generation, and is a no-op without a worker", async () => {
    const { engine } = setup();
    await engine.relieveMemory("drop"); // not started: nothing to do
    await engine.start();
    const log: string[] = [];
    const ac = new AbortController();
    const slow = background(engine.generate(req("slow", { maxTokens: 100_000 }), ac.signal), "s", log);
    await until(() => log.includes("s:text"), "first token");
    await engine.relieveMemory("drop");
    expect(log.includes("s:done")).toBe(false);
    ac.abort();
    await slow.finished;
  });
});

describe("concurrency", () => {
  test("max_concurrency 1: one at a time (FIFO)", async () => {
    const { engine } = setup();
    await engine.start();
    const log: string[] = [];
    const ac = new AbortController();
    const a = background(engine.generate(req("slow", { maxTokens: 100_000 }), ac.signal), "a", log);
    const b = background(engine.generate(req("b")), "b", log);
    await until(() => log.includes("a:text"), "a running");
    const stats = await engine.stats();
    expect(stats).toMatchObject({ running: 1, queued: 1 });
    ac.abort();
    await Promise.all([a.finished, b.finished]);
    expect(log.filter((l) => l.endsWith(":started"))).toEqual(["a:started", "b:started"]);
  });

  test("max_concurrency 3: three run at once, the rest wait in order; cancelling one leaves the others", async () => {
    const { engine, journal } = setup({}, { FAKE_WORKER_CONCURRENCY: "3", FAKE_WORKER_TOKEN_MS: "5" });
    await engine.start();
    const log: string[] = [];
    const acs = [0, 1, 2].map(() => new AbortController());
    const running = acs.map((ac, i) => background(engine.generate(req("slow", { maxTokens: 100_000 }), ac.signal), `r${i}`, log));
    const waiting = ["w0", "w1"].map((l) => background(engine.generate(req(l)), l, log));
    await until(() => [0, 1, 2].every((i) => log.includes(`r${i}:text`)), "three running");
    expect(await engine.stats()).toMatchObject({ running: 3, queued: 2 });
    expect(log.some((l) => l.startsWith("w"))).toBe(false);
    acs[1]?.abort();
    await running[1]?.finished;
    expect(running[1]?.events.at(-1)).toMatchObject({ type: "done", finishReason: "cancelled" });
    await waiting[0]?.finished;
    expect(await engine.stats()).toMatchObject({ running: 3, queued: 0 });
    acs[0]?.abort();
    acs[2]?.abort();
    await Promise.all([...running, ...waiting].map((j) => j.finished));
    for (const j of [...running, ...waiting]) expect(j.events.at(-1)?.type).toBe("done");
    expect(log.filter((l) => l.startsWith("w") && l.endsWith(":started"))).toEqual(["w0:started", "w1:started"]);
    const cancels = journal().filter((j) => j.cmd === "cancel");
    expect(cancels.length).toBe(3);
  });

  test("with concurrency the queue bound and the queue timeout still answer EngineOverloadedError", async () => {
    const { engine } = setup({ queueLimit: 1, queueTimeoutMs: 200 }, { FAKE_WORKER_CONCURRENCY: "2" });
    await engine.start();
    const log: string[] = [];
    const acs = [new AbortController(), new AbortController()];
    const running = acs.map((ac, i) => background(engine.generate(req("slow", { maxTokens: 100_000 }), ac.signal), `r${i}`, log));
    await until(() => log.includes("r0:text") && log.includes("r1:text"), "two running");
    const queued = background(engine.generate(req("q")), "q", log);
    const over = await collect(engine.generate(req("over")));
    expect(over.error).toBeInstanceOf(EngineOverloadedError);
    await queued.finished;
    expect(queued.error()).toBeInstanceOf(EngineOverloadedError);
    expect((queued.error() as Error).message).toContain("waited");
    for (const ac of acs) ac.abort();
    await Promise.all(running.map((r) => r.finished));
  });
});
