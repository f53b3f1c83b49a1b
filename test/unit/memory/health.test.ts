import { describe, expect, test } from "bun:test";
import type { EngineStats } from "../../../src/engine/types";
import { GuardState } from "../../../src/memory/gate";
import { memoryHealth, memoryInfo } from "../../../src/memory/health";
import { createMemoryMonitor } from "../../../src/memory/monitor";
import { FakeEngine } from "../../support/fake-engine";
import { FakeMemoryMonitor } from "../../support/fake-memory";
import { ManualClock, RecordingLogger, ScriptedSource } from "../../support/memory-kit";

describe("memoryInfo", () => {
  test("status, GB, thresholds, in-flight count and accepting", () => {
    const monitor = new FakeMemoryMonitor({ status: "warning", availableGb: 1.23456 });
    const state = new GuardState();
    state.inflight.register("req_a", "POST /v1/messages");
    expect(memoryInfo({ monitor, state })).toEqual({
      status: "warning",
      available_gb: 1.235,
      thresholds_gb: { caution: 3, warning: 2, critical: 1, emergency: 0.5 },
      in_flight: 1,
      accepting: true,
    });
    state.stopAccepting("x");
    expect(memoryInfo({ monitor, state }).accepting).toBe(false);
  });

  test("adds sample age and source for the sampled monitor; null GB before the first sample", async () => {
    const clock = new ManualClock();
    const monitor = createMemoryMonitor({ source: new ScriptedSource(6), now: clock.now, log: new RecordingLogger() });
    expect(memoryInfo({ monitor }).available_gb).toBeNull();
    expect(memoryInfo({ monitor }).sample_age_ms).toBeNull();
    await monitor.sampleNow();
    clock.advance(120);
    const info = memoryInfo({ monitor });
    expect(info.available_gb).toBe(6);
    expect(info.sample_age_ms).toBe(120);
    expect(info.source).toBe("scripted");
  });
});

describe("memoryHealth", () => {
  test("adds the bridge's state and MLX memory (GB)", async () => {
    const monitor = new FakeMemoryMonitor();
    const h = await memoryHealth({ monitor, engine: new FakeEngine() });
    expect(h.bridge).toEqual({
      state: "ready",
      mlx: { active_gb: 0.1, cache_gb: 0, peak_gb: 0.2 },
      worker_rss_gb: 0.3,
      worker_pid: 4242,
      restarts: 0,
      queued: 0,
      running: 0,
    });
  });

  test("a worker that does not answer in time: state only, with the reason", async () => {
    const engine = { state: () => "starting" as const, stats: () => new Promise<EngineStats>(() => {}) };
    const h = await memoryHealth({ monitor: new FakeMemoryMonitor(), engine, statsTimeoutMs: 20 });
    expect(h.bridge?.state).toBe("starting");
    expect(h.bridge?.mlx).toBeNull();
    expect(h.bridge?.stats_error).toContain("20 ms");
  });

  test("without an engine, memory fields only", async () => {
    expect(await memoryHealth({ monitor: new FakeMemoryMonitor() })).not.toHaveProperty("bridge");
  });
});
