/** stats() answers at once while the worker is busy: engine counts now, worker figures as last known. */

import { describe, expect, setDefaultTimeout, test } from "bun:test";
import type { EngineEvent } from "../../../src/engine/types";
import { collect, fakeEngines, req, types, until } from "./helpers";

// Spawns processes; a loaded 2-core machine can be slow.
setDefaultTimeout(30_000);

const setup = fakeEngines();

describe("MlxEngine.stats while the worker is busy", () => {
  test("a worker stalled in a prefill chunk: stats answer before it moves, with the last figures and their age", async () => {
    const s = setup({}, { FAKE_WORKER_BLOCK_MS: "2500" });
    await s.engine.start();
    const idle = await s.engine.stats();
    const idleAt = performance.now();
    expect(idle.mlx).not.toBeNull();
    const it = s.engine.generate(req("block"))[Symbol.asyncIterator]();
    const seen: EngineEvent[] = [];
    while (seen.at(-1)?.type !== "progress") seen.push((await it.next()).value as EngineEvent);
    // The worker is now stalled for 2.5 s; its next event comes after.
    const busy = await Promise.all([s.engine.stats(), s.engine.stats()]);
    const answeredAt = performance.now();
    const next = await it.next();
    const nextAt = performance.now();
    expect(next.value).toMatchObject({ type: "text" });
    // Answered while the worker was stalled, well before it moved on.
    expect(nextAt - answeredAt).toBeGreaterThan(1000);
    expect(idle.statsAgeMs).toBeLessThan(1000); // an idle worker answers within the wait
    for (const st of busy) {
      expect(st).toMatchObject({ state: "ready", running: 1, queued: 0, mlx: idle.mlx, workerRssGb: idle.workerRssGb });
      expect(st.workerPid).toBe(idle.workerPid);
      expect(st.statsAgeMs).toBeGreaterThanOrEqual(answeredAt - idleAt - 50);
    }
    // One refresh in flight at a time, however many callers.
    const statsSent = () => s.journal().filter((j) => j.cmd === "stats").length;
    await until(() => statsSent() === 2, "the refresh to reach the worker");
    for (let r = await it.next(); !r.done; r = await it.next()) seen.push(r.value);
    // Once the worker answers, the figures are fresh again.
    const after = await s.engine.stats();
    expect(after.running).toBe(0);
    expect(after.statsAgeMs).toBeLessThan(1000);
  });

  test("figures are refreshed whenever the worker answers; a new worker's old figures are dropped", async () => {
    const s = setup();
    await s.engine.start();
    const first = await s.engine.stats();
    expect(first.promptCache?.entries).toBe(0);
    await collect(s.engine.generate(req("hi")));
    const longer = [{ role: "user" as const, content: "a" }, { role: "assistant" as const, content: "b" }, { role: "user" as const, content: "hi" }];
    await collect(s.engine.generate(req("hi", { messages: longer })));
    expect((await s.engine.stats()).promptCache?.entries).toBe(2);
    const { error } = await collect(s.engine.generate(req("crash")));
    expect(error).toBeDefined();
    expect(types((await collect(s.engine.generate(req("hi")))).events).at(-1)).toBe("done");
    const fresh = await s.engine.stats();
    expect(fresh.workerPid).not.toBe(first.workerPid);
    expect(fresh.promptCache?.entries).toBe(1); // the new worker's own cache, not the old one's
  });

  test("without a worker: no figures and no age", async () => {
    const s = setup();
    const st = await s.engine.stats();
    expect(st).toMatchObject({ state: "stopped", mlx: null, workerRssGb: null, workerPid: null });
    expect(st.statsAgeMs).toBeUndefined();
  });
});
