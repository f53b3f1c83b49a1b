import { describe, expect, test } from "bun:test";
import type { EngineStats } from "../../../src/engine/types";
import { healthRoutes } from "../../../src/http/health";
import { FakeEngine } from "../../support/fake-engine";

const get = (app: ReturnType<typeof healthRoutes>) => app.handle(new Request("http://localhost/health")).then((r) => r.json());

describe("GET /health: the engine's stats", () => {
  test("the worker's state and MLX memory (active, cache, peak)", async () => {
    const app = healthRoutes({ engine: new FakeEngine(), version: "t", clock: () => 0, startedAt: 0 });
    const body = await get(app);
    expect(body.engine).toMatchObject({
      state: "ready",
      mlx: { activeGb: 0.1, cacheGb: 0, peakGb: 0.2 },
      workerRssGb: 0.3,
      workerPid: 4242,
      restarts: 0,
      queued: 0,
      running: 0,
    });
  });

  test("a worker that does not answer in time: state only, and still 200", async () => {
    const engine = new FakeEngine({ state: "starting" });
    engine.stats = () => new Promise<EngineStats>(() => {});
    const app = healthRoutes({ engine, version: "t", clock: () => 0, startedAt: 0, statsTimeoutMs: 20 });
    const res = await app.handle(new Request("http://localhost/health"));
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body.engine).toEqual({ state: "starting" });
    expect([body.status, body.ready]).toEqual(["starting", false]);
  });

  test("a failing stats call answers the same way", async () => {
    const engine = new FakeEngine();
    engine.stats = () => Promise.reject(new Error("worker gone"));
    const body = await get(healthRoutes({ engine, version: "t", clock: () => 0, startedAt: 0 }));
    expect(body.engine).toEqual({ state: "ready" });
  });
});
