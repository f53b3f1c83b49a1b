import { describe, expect, test } from "bun:test";
import type { EngineStats } from "../../../src/engine/types";
import { type HealthDeps, healthRoutes } from "../../../src/http/health";
import { GuardState } from "../../../src/lifecycle/guard-state";
import { FakeEngine } from "../../support/fake-engine";
import { FakeMemoryMonitor } from "../../support/fake-memory";
import { httpDefaults } from "../../../src/config";

const makeHealth = (over: Partial<HealthDeps> = {}) =>
  healthRoutes({
    engine: new FakeEngine(),
    version: "t",
    clock: () => 0,
    startedAt: 0,
    memory: new FakeMemoryMonitor({ availableGb: 12.3456 }),
    state: new GuardState(),
    showDetails: () => true,
    statsTimeoutMs: httpDefaults.healthStatsTimeoutMs,
    ...over,
  });
const get = (app: ReturnType<typeof healthRoutes>) => app.handle(new Request("http://localhost/health")).then((r) => r.json());

describe("GET /health: the engine's stats", () => {
  test("the worker's state and MLX memory (active, cache, peak)", async () => {
    const body = await get(makeHealth());
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
    const res = await makeHealth({ engine, statsTimeoutMs: 20 }).handle(new Request("http://localhost/health"));
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body.engine).toEqual({ state: "starting" });
    expect([body.status, body.ready]).toEqual(["starting", false]);
  });

  test("a failing stats call answers the same way", async () => {
    const engine = new FakeEngine();
    engine.stats = () => Promise.reject(new Error("worker gone"));
    expect((await get(makeHealth({ engine }))).engine).toEqual({ state: "ready" });
  });

  test("a busy worker: the worker's last figures, with their age, no stale counts, and the memory fields all the same", async () => {
    const engine = new FakeEngine();
    let now = 1_000;
    const app = makeHealth({ engine, clock: () => now, statsTimeoutMs: 20, memoryInfo: () => ({ in_flight: 1, source: "file:/x" }) });
    expect((await get(app)).engine.workerPid).toBe(4242);
    engine.stats = () => new Promise<EngineStats>(() => {});
    now = 3_500;
    const body = await get(app);
    expect(body.engine).toMatchObject({ state: "ready", workerPid: 4242, workerRssGb: 0.3, statsAgeMs: 2_500 });
    expect(body.engine.running).toBeUndefined();
    expect(body.engine.queued).toBeUndefined();
    expect(body.memory).toEqual({ status: "safe", available_gb: 12.346, in_flight: 1, source: "file:/x" });
  });
});

describe("GET /health: what it shows without the token", () => {
  test("name, status, version, uptime and memory level only; the engine is not asked", async () => {
    const engine = new FakeEngine();
    let asked = 0;
    engine.stats = () => (asked++, Promise.resolve({} as EngineStats));
    const app = makeHealth({ engine, showDetails: () => false, memoryInfo: () => ({ source: "file:/secret/path", in_flight: 0 }) });
    const body = await get(app);
    expect(body).toEqual({
      status: "ok",
      ready: true,
      model: "tiny-demo",
      version: "t",
      uptime_s: 0,
      engine: { state: "ready" },
      memory: { status: "safe", available_gb: 12.346 },
    });
    expect(asked).toBe(0);
  });

  test("memory comes from the sampler even without memory-safety details", async () => {
    const memory = new FakeMemoryMonitor();
    memory.set("warning", 1.5);
    expect((await get(makeHealth({ memory }))).memory).toEqual({ status: "warning", available_gb: 1.5 });
  });

  test("a failing memoryInfo still leaves the sampler's level", async () => {
    const body = await get(
      makeHealth({
        memoryInfo: () => {
          throw new Error("boom");
        },
      }),
    );
    expect(body.memory).toEqual({ status: "safe", available_gb: 12.346 });
  });
});
