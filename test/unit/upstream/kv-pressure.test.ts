import { describe, expect, test } from "bun:test";
import type { MemoryMonitor, MemoryStatus } from "../../../src/memory/types";
import { DEFAULT_THRESHOLDS } from "../../../src/memory/types";
import { UpstreamKvPoller, kvStatus, parseKvUsage, withKvPressure } from "../../../src/upstream/kv-pressure";
import { connectionRefused, fakeUpstream } from "./fake-upstream";

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
    expect([null, 0.5, 0.8, 0.9, 0.97, 1].map((u) => kvStatus(u))).toEqual(["safe", "safe", "caution", "warning", "critical", "critical"]);
  });

  test("the poller reads /metrics with auth; failures and stale readings add no pressure", async () => {
    let clock = 0;
    let down = false;
    const up = fakeUpstream(() => {
      if (down) throw connectionRefused();
      return new Response(VLLM_METRICS);
    });
    const kv = new UpstreamKvPoller({ baseUrl: "http://gpu:8000/v1", apiKey: "k", fetch: up.fetch, intervalMs: 1000, now: () => clock });
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

  test("withKvPressure raises the local status, and keeps the rest of the monitor", () => {
    let local: MemoryStatus = "safe";
    let remote: MemoryStatus = "warning";
    const monitor = {
      checkStatus: () => local,
      availableGb: () => 12,
      thresholds: () => DEFAULT_THRESHOLDS,
      describe() {
        return `linux ${this.availableGb()}`;
      },
    } satisfies MemoryMonitor & { describe(): string };
    const m = withKvPressure(monitor, { checkStatus: () => remote });
    expect(m.checkStatus()).toBe("warning");
    local = "critical";
    expect(m.checkStatus()).toBe("critical");
    remote = "safe";
    local = "caution";
    expect(m.checkStatus()).toBe("caution");
    expect(m.availableGb()).toBe(12);
    expect(m.describe()).toBe("linux 12");
  });
});
