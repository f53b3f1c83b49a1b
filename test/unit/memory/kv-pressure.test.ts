import { describe, expect, test } from "bun:test";
import { KvPressurePoller, kvStatus, parseKvUsage } from "../../../src/memory/kv-pressure";
import { kvPressureDefaults, serveDefaults } from "../../../src/config";
import { createMemoryMonitor, monitorTuning } from "../../../src/memory/monitor";
import type { MemoryStatus } from "../../../src/memory/types";
import { ManualClock, RecordingLogger, ScriptedSource } from "../../support/memory-kit";
import { upstreamMetrics } from "../../../src/upstream/kv-pressure";
import { connectionRefused, fakeUpstream } from "../upstream/fake-upstream";

const VLLM_METRICS = `# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-8B"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen3-8B"} 0.915
`;

describe("KV usage from /metrics", () => {
  test("parses vLLM (max over engines), vLLM v0, SGLang and llama-server gauges", () => {
    expect(parseKvUsage(VLLM_METRICS)).toBe(0.915);
    expect(parseKvUsage('vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n')).toBe(0.5);
    expect(parseKvUsage('sglang:token_usage{model_name="m"} 0.81\n')).toBe(0.81);
    expect(parseKvUsage("llamacpp:kv_cache_usage_ratio 0.3\n")).toBe(0.3);
    expect(parseKvUsage("process_cpu_seconds_total 12\n")).toBeNull();
  });

  test("levels: caution 80%, warning 90%, critical 97%, never emergency", () => {
    expect([null, 0.5, 0.8, 0.9, 0.97, 1].map((u) => kvStatus(u, kvPressureDefaults.thresholds))).toEqual(["safe", "safe", "caution", "warning", "critical", "critical"]);
  });

  test("the poller reads /metrics with auth; failures and stale readings add no pressure", async () => {
    let clock = 0;
    let down = false;
    const up = fakeUpstream(() => {
      if (down) throw connectionRefused();
      return new Response(VLLM_METRICS);
    });
    const metrics = upstreamMetrics({ baseUrl: "http://gpu:8000/v1", apiKey: "k", fetch: up.fetch });
    const kv = new KvPressurePoller({ ...kvPressureDefaults, metrics, intervalMs: 1000, staleAfterMs: 3000, now: () => clock });
    await kv.poll();
    expect(up.requests[0]?.url).toBe("http://gpu:8000/metrics");
    expect(up.requests[0]?.headers.get("authorization")).toBe("Bearer k");
    expect(kv.info()).toEqual({ url: "http://gpu:8000", usage: 0.915, status: "warning", lastError: null });
    down = true;
    await kv.poll();
    expect(kv.checkStatus()).toBe("warning");
    expect(kv.info().lastError).toContain("cannot reach upstream");
    clock = 3001;
    expect(kv.checkStatus()).toBe("safe");
  });

  test("a pressure source raises the monitor's status; the GB figures stay the local reading's", async () => {
    let remote: MemoryStatus = "warning";
    const clock = new ManualClock();
    const monitor = createMemoryMonitor({
      ...monitorTuning(serveDefaults()),
      source: new ScriptedSource(12),
      now: clock.now,
      log: new RecordingLogger(),
      pressures: [{ checkStatus: () => remote }],
    });
    await monitor.sampleNow();
    expect(monitor.checkStatus()).toBe("warning");
    remote = "safe";
    expect(monitor.checkStatus()).toBe("safe");
    remote = "critical";
    expect(monitor.checkStatus()).toBe("critical");
    expect(monitor.availableGb()).toBe(12);
  });
});
