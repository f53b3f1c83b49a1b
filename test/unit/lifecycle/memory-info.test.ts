import { describe, expect, test } from "bun:test";
import { GuardState } from "../../../src/lifecycle/guard-state";
import { memoryInfo } from "../../../src/lifecycle/memory-info";
import { serveDefaults } from "../../../src/config";
import { createMemoryMonitor, monitorTuning } from "../../../src/memory/monitor";
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
    const monitor = createMemoryMonitor({ ...monitorTuning(serveDefaults()), source: new ScriptedSource(6), now: clock.now, log: new RecordingLogger() });
    const state = new GuardState();
    expect(memoryInfo({ monitor, state }).available_gb).toBeNull();
    expect(memoryInfo({ monitor, state }).sample_age_ms).toBeNull();
    await monitor.sampleNow();
    clock.advance(120);
    const info = memoryInfo({ monitor, state });
    expect(info.available_gb).toBe(6);
    expect(info.sample_age_ms).toBe(120);
    expect(info.source).toBe("scripted");
  });
});
