import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { appTuning, createApp } from "../../../src/app";
import { serveDefaults } from "../../../src/config";
import type { EngineStats } from "../../../src/engine/types";
import { createEmergencyShutdown, type EmergencyDeps, emergencyTimings } from "../../../src/lifecycle/emergency";
import { emergencyLogName, type EmergencyRecord } from "../../../src/lifecycle/emergency-log";
import { InflightRegistry } from "../../../src/lifecycle/inflight";
import { setupMemorySafety } from "../../../src/lifecycle/memory-safety";
import { createMemoryMonitor, type MemorySample, monitorTuning } from "../../../src/memory/monitor";
import { FakeEngine } from "../../support/fake-engine";
import { RecordingLogger, ScriptedSource } from "../../support/memory-kit";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), "pensieve-emerg-"));
  dirs.push(d);
  return d;
};

const SAMPLE: MemorySample = { at: Date.UTC(2026, 0, 2, 3, 4, 5), availableBytes: 429496729, availableGb: 0.4, raw: "emergency", status: "emergency", confirmation: true };
const STATS: EngineStats = {
  state: "ready",
  model: { id: "tiny", path: "/m/tiny", contextLength: 2048, isDemo: true, supportsVision: false, kvBytesPerToken: 4096 },
  queued: 0,
  running: 1,
  mlx: { activeGb: 1.5, cacheGb: 0.5, peakGb: 2 },
  workerRssGb: 2.2,
  workerPid: 999,
  restarts: 0,
};

/** Deps that record every step, in order. */
function recorder(over: Partial<EmergencyDeps> = {}) {
  const calls: string[] = [];
  const inflight = new InflightRegistry();
  const log = new RecordingLogger();
  let record: EmergencyRecord | null = null;
  const deps: EmergencyDeps = {
    ...emergencyTimings(serveDefaults()),
    // The recorder's writeLog writes nothing; the log-file test gives a real logDir.
    logDir: "/nonexistent/pensieve-logs",
    log,
    inflight,
    stopAccepting: (r) => calls.push(`stopAccepting:${r}`),
    waitForDrain: async (ms) => {
      calls.push(`waitForDrain:${ms}`);
      return inflight.count() === 0;
    },
    abortOpenStreams: (err) => {
      calls.push(`abortOpenStreams:${err.message}`);
      return inflight.abortAll(err);
    },
    engine: {
      stats: async () => {
        calls.push("stats");
        return STATS;
      },
      clearCache: async () => {
        calls.push("clearCache");
      },
      stop: async () => {
        calls.push("stop");
      },
    },
    samples: () => [SAMPLE],
    thresholds: () => ({ caution: 3, warning: 2, critical: 1, emergency: 0.5 }),
    memorySource: "file:/tmp/avail",
    writeLog: async (r) => {
      calls.push("writeLog");
      record = structuredClone(r);
      return "/logs/x.log";
    },
    exit: (code) => calls.push(`exit:${code}`),
    now: () => new Date(Date.UTC(2026, 0, 2, 3, 4, 6)),
    ...over,
  };
  return { deps, calls, inflight, log, record: () => record! };
}

describe("emergency shutdown sequence", () => {
  test("drained: log, stop accepting, drain, clear cache, stop bridge, write log, exit 1 — in that order", async () => {
    const r = recorder();
    await createEmergencyShutdown(r.deps).trigger("memory emergency: 0.40 GB available");
    expect(r.log.lines[0]).toEqual({ level: "error", msg: "EMERGENCY SHUTDOWN: memory emergency: 0.40 GB available", fields: { inFlight: 0 } });
    expect(r.calls.filter((c) => c !== "stats")).toEqual([
      "stopAccepting:memory emergency: 0.40 GB available",
      "waitForDrain:5000",
      "clearCache",
      "stop",
      "writeLog",
      "exit:1",
    ]);
    // Stats come from the live worker, before it is cleared and stopped.
    expect(r.calls.indexOf("stats")).toBeLessThan(r.calls.indexOf("clearCache"));
    const rec = r.record();
    expect(rec.drained).toBe(true);
    expect(rec.aborted_streams).toBe(0);
    expect(rec.steps.map((s) => [s.step, s.ok])).toEqual([
      ["log_reason", true],
      ["stop_accepting", true],
      ["drain", true],
      ["clear_cache", true],
      ["stop_bridge", true],
    ]);
  });

  test("not drained in time: open streams are ended, given a moment to flush, then the rest", async () => {
    const r = recorder({ drainTimeoutMs: 1234, flushTimeoutMs: 77 });
    const entry = r.inflight.register("req_open", "POST /v1/messages");
    await createEmergencyShutdown(r.deps).trigger("memory emergency");
    expect(r.calls.filter((c) => c !== "stats")).toEqual([
      "stopAccepting:memory emergency",
      "waitForDrain:1234",
      "abortOpenStreams:The server is shutting down: memory emergency.",
      "waitForDrain:77",
      "clearCache",
      "stop",
      "writeLog",
      "exit:1",
    ]);
    expect(entry.controller.signal.aborted).toBe(true);
    const rec = r.record();
    expect(rec.drained).toBe(false);
    expect(rec.aborted_streams).toBe(1);
    expect(rec.in_flight).toEqual([{ id: "req_open", route: "POST /v1/messages", age_ms: expect.any(Number), streaming: false }]);
  });

  test("the record: time, reason, samples, thresholds, in-flight ids and ages, bridge stats", async () => {
    const r = recorder();
    await createEmergencyShutdown(r.deps).trigger("memory emergency");
    const rec = r.record();
    expect(rec.time).toBe("2026-01-02T03:04:06.000Z");
    expect(rec.reason).toBe("memory emergency");
    expect(rec.pid).toBe(process.pid);
    expect(rec.memory).toEqual({
      source: "file:/tmp/avail",
      thresholds_gb: { caution: 3, warning: 2, critical: 1, emergency: 0.5 },
      samples: [{ time: "2026-01-02T03:04:05.000Z", available_gb: 0.4, available_bytes: 429496729, raw: "emergency", status: "emergency", confirmation: true }],
    });
    expect(rec.bridge).toEqual({ stats: STATS });
  });

  test("idempotent: a second trigger does nothing and returns the same promise", async () => {
    const r = recorder();
    const s = createEmergencyShutdown(r.deps);
    expect(s.triggered()).toBe(false);
    const first = s.trigger("first");
    const second = s.trigger("second");
    expect(second).toBe(first);
    await first;
    await s.trigger("third");
    expect(r.calls.filter((c) => c.startsWith("exit"))).toEqual(["exit:1"]);
    expect(r.calls.filter((c) => c.startsWith("stopAccepting"))).toEqual(["stopAccepting:first"]);
    expect(s.reason()).toBe("first");
  });

  test("a failing step is recorded and the sequence goes on to exit", async () => {
    const r = recorder();
    r.deps.engine.clearCache = async () => {
      throw new Error("worker gone");
    };
    r.deps.engine.stats = async () => {
      throw new Error("no stats");
    };
    await createEmergencyShutdown(r.deps).trigger("memory emergency");
    expect(r.calls.slice(-3)).toEqual(["stop", "writeLog", "exit:1"]);
    const rec = r.record();
    expect(rec.steps.find((s) => s.step === "clear_cache")).toMatchObject({ ok: false, error: "worker gone" });
    expect(rec.bridge).toEqual({ stats: null, error: "no stats" });
    expect(r.log.at("error").some((l) => l.msg.includes("clear_cache failed"))).toBe(true);
  });

  test("hanging bridge calls are cut off by their timeouts", async () => {
    const r = recorder({ statsTimeoutMs: 10, clearCacheTimeoutMs: 10, stopTimeoutMs: 10 });
    r.deps.engine.stats = () => new Promise(() => {});
    r.deps.engine.clearCache = () => new Promise(() => {});
    r.deps.engine.stop = () => new Promise(() => {});
    await createEmergencyShutdown(r.deps).trigger("memory emergency");
    expect(r.calls.slice(-2)).toEqual(["writeLog", "exit:1"]);
    const rec = r.record();
    expect(rec.steps.filter((s) => !s.ok).map((s) => s.step)).toEqual(["clear_cache", "stop_bridge"]);
    expect(rec.bridge.error).toContain("took over 10 ms");
  });

  test("exit(1) happens even when writing the log fails", async () => {
    const r = recorder({
      writeLog: async () => {
        throw new Error("disk full");
      },
    });
    await createEmergencyShutdown(r.deps).trigger("memory emergency");
    expect(r.calls.at(-1)).toBe("exit:1");
    expect(r.log.at("error").some((l) => l.msg.includes("write_log failed"))).toBe(true);
  });
});

describe("the emergency log file", () => {
  test("default writer: pensieve-emergency-<timestamp>.log, JSON, in logDir (created)", async () => {
    const dir = join(tempDir(), "nested", "logs");
    const r = recorder({ logDir: dir });
    delete r.deps.writeLog;
    await createEmergencyShutdown(r.deps).trigger("memory emergency");
    const files = readdirSync(dir);
    expect(files).toEqual([emergencyLogName(new Date(Date.UTC(2026, 0, 2, 3, 4, 6)))]);
    expect(files[0]).toBe("pensieve-emergency-2026-01-02T03-04-06-000Z.log");
    const rec = JSON.parse(readFileSync(join(dir, files[0]!), "utf8")) as EmergencyRecord;
    expect(Object.keys(rec).sort()).toEqual(["aborted_streams", "bridge", "drained", "in_flight", "memory", "pid", "reason", "steps", "time", "uptime_s"]);
    expect(statSync(join(dir, files[0]!)).mode & 0o777).toBe(0o600);
  });

  test("end to end in process: a live stream is ended, and the log holds no prompt or generated text", async () => {
    const dir = tempDir();
    const source = new ScriptedSource(8);
    const log = new RecordingLogger();
    const monitor = createMemoryMonitor({ ...monitorTuning(serveDefaults()), source, log });
    await monitor.sampleNow();
    const engine = new FakeEngine({
      script: [
        { type: "started", promptTokens: 5, cachedTokens: 0 },
        { type: "text", text: "SECRET-OUTPUT-7" },
        { type: "hold" },
        { type: "done", finishReason: "stop", promptTokens: 5, completionTokens: 1, cachedTokens: 0 },
      ],
    });
    let exitCode: number | null = null;
    const safety = setupMemorySafety({ ...emergencyTimings(serveDefaults()), monitor, engine, log, logDir: dir, drainTimeoutMs: 50, exit: (c) => (exitCode = c) });
    const app = createApp({
      engine,
      memory: monitor,
      config: {
        ...appTuning(serveDefaults()),
        token: "t",
        aliases: "*=default",
        allowedHosts: [],
        version: "test",
        stream: { headStartMs: Number.POSITIVE_INFINITY, pingIntervalMs: Number.POSITIVE_INFINITY },
      },
      state: safety.state,
      onEmergency: safety.onEmergency,
      memoryInfo: safety.memoryInfo,
      logger: log,
    });
    const res = await app.handle(
      new Request("http://localhost/v1/messages", {
        method: "POST",
        headers: { "x-api-key": "t", "content-type": "application/json" },
        body: JSON.stringify({ model: "claude-x", max_tokens: 32, stream: true, system: "SECRET-SYSTEM-3", messages: [{ role: "user", content: "SECRET-PROMPT-5" }] }),
      }),
    );
    expect(res.status).toBe(200);
    const body = res.text();
    expect(safety.state.inflight.count()).toBe(1);

    // Memory collapses: the sampler confirms with its re-read and fires the shutdown on its own.
    source.set(0.2);
    await monitor.sampleNow();
    await safety.shutdown.trigger("again"); // idempotent: resolves with the running sequence
    const text = await body;
    expect(text).toContain("event: message_start");
    expect(text.trim().split("\n\n").at(-1)).toMatch(/^event: error\ndata: .*"overloaded_error".*shutting down: memory emergency: 0\.20 GB available/);
    expect(exitCode === 1).toBe(true);

    // Refused from the moment the shutdown began.
    const after = await app.handle(
      new Request("http://localhost/v1/messages", { method: "POST", headers: { "x-api-key": "t", "content-type": "application/json" }, body: JSON.stringify({ model: "m", max_tokens: 1, messages: [{ role: "user", content: "x" }] }) }),
    );
    expect(after.status).toBe(503);

    const [file] = readdirSync(dir);
    const raw = readFileSync(join(dir, file!), "utf8");
    const rec = JSON.parse(raw) as EmergencyRecord;
    expect(rec.reason).toContain("memory emergency: 0.20 GB available");
    expect(rec.in_flight).toEqual([{ id: res.headers.get("request-id")!, route: "POST /v1/messages", age_ms: expect.any(Number), streaming: true }]);
    expect(rec.memory.samples.at(-1)).toMatchObject({ status: "emergency", confirmation: true });
    expect(rec.bridge.stats?.mlx).toEqual({ activeGb: 0.1, cacheGb: 0, peakGb: 0.2 });
    expect(rec.steps.map((s) => s.step)).toEqual(["log_reason", "stop_accepting", "drain", "abort_streams", "flush_streams", "clear_cache", "stop_bridge"]);
    for (const secret of ["SECRET-OUTPUT-7", "SECRET-PROMPT-5", "SECRET-SYSTEM-3"]) {
      expect(raw).not.toContain(secret);
      expect(log.text()).not.toContain(secret);
    }
    expect(engine.state()).toBe("stopped");
  });
});
