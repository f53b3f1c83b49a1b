import { afterEach, describe, expect, jest, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BYTES_PER_GB } from "../../../src/memory/levels";
import { serveDefaults } from "../../../src/config";
import { createMemoryMonitor, type MemoryMonitorConfig, type MemorySample, monitorTuning, type SampledMemoryMonitor } from "../../../src/memory/monitor";
import type { MemoryStatus } from "../../../src/memory/types";
import { ManualClock, RecordingLogger, ScriptedSource, withPressure } from "../../support/memory-kit";

const TUNING = monitorTuning(serveDefaults());
const started: SampledMemoryMonitor[] = [];

// Lets a sample started by a fired timer finish (its read is a resolved promise chain).
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}
afterEach(() => {
  for (const m of started.splice(0)) m.stop();
});

function setup(initialGb = 8, extra: Partial<MemoryMonitorConfig> = {}) {
  const source = new ScriptedSource(initialGb);
  const clock = new ManualClock();
  const log = new RecordingLogger();
  const monitor = createMemoryMonitor({ ...TUNING, source, now: clock.now, log, hysteresis: { marginGb: 0.25, samples: 3 }, ...extra });
  started.push(monitor);
  return { source, clock, log, monitor };
}

/** Take one sample at `gb` and return the published status. */
async function at(m: { source: ScriptedSource; monitor: SampledMemoryMonitor }, gb: number): Promise<MemoryStatus> {
  m.source.set(gb);
  await m.monitor.sampleNow();
  return m.monitor.checkStatus();
}

describe("createMemoryMonitor: every status from fresh samples", () => {
  const cases: [number, MemoryStatus][] = [
    [3.5, "safe"],
    [3, "caution"],
    [2.5, "caution"],
    [2, "warning"],
    [1.5, "warning"],
    [1, "critical"],
    [0.75, "critical"],
  ];
  for (const [gb, status] of cases) {
    test(`${gb} GB -> ${status}`, async () => {
      const m = setup(gb);
      await m.monitor.sampleNow();
      expect(m.monitor.checkStatus()).toBe(status);
      expect(m.monitor.availableGb()).toBeCloseTo(gb, 6);
    });
  }

  test("0.5 GB (<= emergency) -> emergency, once confirmed by the immediate re-read", async () => {
    const m = setup(0.5);
    await m.monitor.sampleNow();
    expect(m.monitor.checkStatus()).toBe("emergency");
    expect(m.source.reads).toBe(2);
  });
});

describe("checks read the last sample", () => {
  test("checkStatus and availableGb do not touch the source", async () => {
    const m = setup(8);
    await m.monitor.sampleNow();
    const reads = m.source.reads;
    for (let i = 0; i < 1000; i++) m.monitor.checkStatus();
    m.monitor.availableGb();
    expect(m.source.reads).toBe(reads);
  });

  test("before any sample: Caution and NaN GB", () => {
    const m = setup(8);
    expect(m.monitor.checkStatus()).toBe("caution");
    expect(Number.isNaN(m.monitor.availableGb())).toBe(true);
    expect(m.monitor.lastSample()).toBeNull();
  });
});

describe("hysteresis", () => {
  test("escalation is immediate", async () => {
    const m = setup(8);
    expect(await at(m, 8)).toBe("safe");
    expect(await at(m, 0.9)).toBe("critical");
  });

  test("de-escalation needs 3 consecutive samples above boundary + margin", async () => {
    const m = setup(8);
    await at(m, 0.9);
    expect(await at(m, 8)).toBe("critical");
    expect(await at(m, 8)).toBe("critical");
    expect(await at(m, 8)).toBe("safe");
  });

  test("a value just above the boundary (inside the margin) never steps down", async () => {
    const m = setup(8);
    await at(m, 1.5); // warning
    for (let i = 0; i < 6; i++) expect(await at(m, 2.1)).toBe("warning"); // caution by value, < 2 + 0.25
    expect(await at(m, 2.3)).toBe("warning");
    expect(await at(m, 2.3)).toBe("warning");
    expect(await at(m, 2.3)).toBe("caution");
  });

  test("flapping around a boundary does not flap the status", async () => {
    const m = setup(8);
    await at(m, 1.9);
    const seen = new Set<MemoryStatus>();
    for (let i = 0; i < 10; i++) seen.add(await at(m, i % 2 ? 1.95 : 2.05));
    expect([...seen]).toEqual(["warning"]);
  });
});

describe("stale samples", () => {
  test("a sample older than 2 s counts as at least Caution", async () => {
    const m = setup(8);
    await m.monitor.sampleNow();
    m.clock.advance(2000);
    expect(m.monitor.checkStatus()).toBe("safe");
    m.clock.advance(1);
    expect(m.monitor.isStale()).toBe(true);
    expect(m.monitor.checkStatus()).toBe("caution");
  });

  test("staleness never lowers a worse status", async () => {
    const m = setup(1.5);
    await m.monitor.sampleNow();
    m.clock.advance(10_000);
    expect(m.monitor.checkStatus()).toBe("warning");
  });

  test("a fresh sample clears staleness", async () => {
    const m = setup(8);
    await m.monitor.sampleNow();
    m.clock.advance(5000);
    await m.monitor.sampleNow();
    expect(m.monitor.checkStatus()).toBe("safe");
  });

  test("staleAfterMs is configurable", async () => {
    const m = setup(8, { staleAfterMs: 500 });
    await m.monitor.sampleNow();
    m.clock.advance(501);
    expect(m.monitor.checkStatus()).toBe("caution");
  });
});

describe("failed reads", () => {
  test("never throw, keep the last sample, and log", async () => {
    const m = setup(8);
    await m.monitor.sampleNow();
    const before = m.monitor.lastSample();
    m.source.set(new Error("EIO"));
    expect(await m.monitor.sampleNow()).toBeNull();
    expect(m.monitor.lastSample()).toBe(before);
    expect(m.monitor.availableGb()).toBeCloseTo(8, 6);
    expect(m.monitor.checkStatus()).toBe("safe");
    expect(m.monitor.readFailures()).toBe(1);
    expect(m.log.at("warn").some((l) => l.msg.includes("read failed") && String(l.fields?.error).includes("EIO"))).toBe(true);
  });

  test("repeated failures are logged once per interval, then turn stale into Caution", async () => {
    const m = setup(8);
    await m.monitor.sampleNow();
    m.source.set(new Error("EIO"));
    for (let i = 0; i < 10; i++) {
      m.clock.advance(300);
      await m.monitor.sampleNow();
    }
    expect(m.log.at("warn").filter((l) => l.msg.includes("read failed"))).toHaveLength(1);
    expect(m.monitor.checkStatus()).toBe("caution");
    m.source.set(8);
    await m.monitor.sampleNow();
    expect(m.log.at("info").some((l) => l.msg.includes("readable again"))).toBe(true);
    expect(m.monitor.checkStatus()).toBe("safe");
  });

  test("garbage values count as failed reads", async () => {
    const m = setup(8);
    await m.monitor.sampleNow();
    m.source.set({ availableBytes: Number.NaN });
    expect(await m.monitor.sampleNow()).toBeNull();
    m.source.set({ availableBytes: -5 });
    expect(await m.monitor.sampleNow()).toBeNull();
    expect(m.monitor.readFailures()).toBe(2);
    expect(m.monitor.availableGb()).toBeCloseTo(8, 6);
  });
});

describe("Emergency confirmation and onEmergency", () => {
  test("one Emergency reading that the re-read contradicts does not fire; status holds at Critical", async () => {
    const fired: string[] = [];
    const m = setup(8, { onEmergency: (r) => fired.push(r) });
    await m.monitor.sampleNow();
    m.source.queueReads(0.3, 4);
    await m.monitor.sampleNow();
    expect(fired).toEqual([]);
    expect(m.monitor.checkStatus()).toBe("critical");
    const recent = m.monitor.recentSamples();
    expect(recent.at(-2)!.raw).toBe("emergency");
    expect(recent.at(-1)!.confirmation).toBe(true);
  });

  test("an Emergency reading confirmed by the immediate re-read fires once", async () => {
    const fired: [string, MemorySample][] = [];
    const m = setup(8, { onEmergency: (r, s) => fired.push([r, s]) });
    await m.monitor.sampleNow();
    m.source.set(0.3);
    await m.monitor.sampleNow();
    expect(m.source.reads).toBe(3);
    expect(fired).toHaveLength(1);
    expect(fired[0]![0]).toMatch(/memory emergency: 0\.30 GB available/);
    expect(fired[0]![1].confirmation).toBe(true);
    expect(m.monitor.checkStatus()).toBe("emergency");
    // Later Emergency samples do not fire again within the same episode.
    await m.monitor.sampleNow();
    await m.monitor.sampleNow();
    expect(fired).toHaveLength(1);
  });

  test("two consecutive Emergency samples fire when the re-read failed", async () => {
    const fired: string[] = [];
    const m = setup(8, { onEmergency: (r) => fired.push(r) });
    await m.monitor.sampleNow();
    m.source.queueReads(0.3, new Error("EIO"));
    await m.monitor.sampleNow();
    expect(fired).toEqual([]);
    expect(m.monitor.checkStatus()).toBe("critical");
    m.source.set(0.3);
    await m.monitor.sampleNow();
    expect(fired).toHaveLength(1);
    expect(m.monitor.checkStatus()).toBe("emergency");
  });

  test("handlers added later, unsubscribe, and a throwing handler does not stop others", async () => {
    const m = setup(8);
    const calls: string[] = [];
    m.monitor.onEmergency(() => {
      throw new Error("boom");
    });
    const off = m.monitor.onEmergency(() => calls.push("removed"));
    m.monitor.onEmergency(() => calls.push("kept"));
    off();
    m.source.set(0.2);
    await m.monitor.sampleNow();
    expect(calls).toEqual(["kept"]);
    expect(m.log.at("error").some((l) => l.msg.includes("handler threw"))).toBe(true);
  });
});

describe("kernel memory pressure (macOS)", () => {
  test("warn raises to at least Caution, critical to at least Critical", async () => {
    const m = setup(8);
    m.source.set(withPressure(8, "warn"));
    await m.monitor.sampleNow();
    expect(m.monitor.checkStatus()).toBe("caution");
    m.source.set(withPressure(8, "critical"));
    await m.monitor.sampleNow();
    expect(m.monitor.checkStatus()).toBe("critical");
    expect(m.monitor.lastSample()!.pressure).toBe("critical");
  });

  test("pressure never lowers the status the figure gives", async () => {
    const m = setup(8);
    m.source.set(withPressure(1.5, "warn"));
    await m.monitor.sampleNow();
    expect(m.monitor.checkStatus()).toBe("warning");
  });
});

describe("history, configuration and the sampler timer", () => {
  test("keeps the most recent samples, oldest first", async () => {
    const m = setup(8, { historySize: 3 });
    for (const gb of [8, 7, 6, 5]) await at(m, gb);
    expect(m.monitor.recentSamples().map((s) => Math.round(s.availableGb))).toEqual([7, 6, 5]);
  });

  test("samples carry bytes, GB, raw and published status", async () => {
    const m = setup(8);
    await at(m, 0.9);
    await at(m, 8);
    const s = m.monitor.lastSample()!;
    expect(s.availableBytes).toBe(8 * BYTES_PER_GB);
    expect(s.raw).toBe("safe");
    expect(s.status).toBe("critical");
    expect(typeof s.at).toBe("number");
  });

  test("interval must be 250-500 ms", () => {
    expect(() => createMemoryMonitor({ ...TUNING, source: new ScriptedSource(), intervalMs: 100 })).toThrow(/250 to 500/);
    expect(() => createMemoryMonitor({ ...TUNING, source: new ScriptedSource(), intervalMs: 501 })).toThrow(/250 to 500/);
    expect(createMemoryMonitor({ ...TUNING, source: new ScriptedSource(), intervalMs: 250 }).intervalMs).toBe(250);
  });

  test("invalid thresholds are refused", () => {
    expect(() => createMemoryMonitor({ ...TUNING, source: new ScriptedSource(), thresholds: { ...TUNING.thresholds, critical: 5 } })).toThrow(/decrease/);
  });

  test("start() takes a first sample, then samples in the background until stop()", async () => {
    // Fake timers drive the sampler's interval: no wall-clock sleeps.
    jest.useFakeTimers();
    try {
      const source = new ScriptedSource(8);
      const monitor = createMemoryMonitor({ ...TUNING, source, intervalMs: 250, log: new RecordingLogger() });
      started.push(monitor);
      await monitor.start();
      expect(source.reads).toBe(1);
      expect(monitor.checkStatus()).toBe("safe");
      for (let i = 0; i < 2; i++) {
        jest.advanceTimersByTime(250);
        await settle();
      }
      expect(source.reads).toBe(3);
      monitor.stop();
      jest.advanceTimersByTime(2500);
      await settle();
      expect(source.reads).toBe(3);
    } finally {
      jest.useRealTimers();
    }
  });

  test("the sampler's timer is unref'd: a started monitor never keeps the process alive", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pensieve-mon-"));
    let proc: ReturnType<typeof Bun.spawn> | null = null;
    try {
      const path = join(dir, "avail");
      writeFileSync(path, String(8 * BYTES_PER_GB));
      const monitorModule = join(import.meta.dir, "../../../src/memory/monitor.ts");
      const configModule = join(import.meta.dir, "../../../src/config.ts");
      const script = `const { createMemoryMonitor, monitorTuning } = await import(${JSON.stringify(monitorModule)});
const { serveDefaults } = await import(${JSON.stringify(configModule)});
const m = createMemoryMonitor({ ...monitorTuning(serveDefaults()), source: ${JSON.stringify(`file:${path}`)} });
await m.start();
console.log(m.checkStatus());`;
      const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
      proc = child;
      // A ref'd timer would keep the child alive forever; give up (and fail) well before the test timeout.
      const code = await Promise.race([child.exited, Bun.sleep(20_000).then(() => "still running")]);
      expect(code).toBe(0);
      expect((await new Response(child.stdout).text()).trim()).toBe("safe");
    } finally {
      if (proc && proc.exitCode === null) proc.kill(); // only when the child hung
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("reads never overlap: a slow source makes ticks share one read", async () => {
    let reads = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = {
      name: "slow",
      injected: true,
      async read() {
        reads += 1;
        await gate;
        return { availableBytes: 8 * BYTES_PER_GB };
      },
    };
    const monitor = createMemoryMonitor({ ...TUNING, source: slow, log: new RecordingLogger() });
    const a = monitor.sampleNow();
    const b = monitor.sampleNow();
    release();
    await Promise.all([a, b]);
    expect(reads).toBe(1);
  });

  test("describe() names the source and flags an injected one", () => {
    const dir = mkdtempSync(join(tmpdir(), "pensieve-mon-"));
    try {
      const m = createMemoryMonitor({ ...TUNING, source: `file:${join(dir, "avail")}`, log: new RecordingLogger() });
      expect(m.describe()).toContain(`file:${join(dir, "avail")}`);
      expect(m.describe()).toContain("INJECTED");
      expect(m.source.injected).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("file:PATH drives the monitor through every level, re-reading on every sample", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pensieve-mon-"));
    const path = join(dir, "avail");
    const fired: string[] = [];
    try {
      const m = createMemoryMonitor({ ...TUNING, source: `file:${path}`, log: new RecordingLogger(), hysteresis: { ...TUNING.hysteresis, samples: 1 }, onEmergency: (r) => fired.push(r) });
      const seen: MemoryStatus[] = [];
      for (const gb of [4, 2.5, 1.5, 0.75, 0.25]) {
        writeFileSync(path, String(Math.round(gb * BYTES_PER_GB)));
        await m.sampleNow();
        seen.push(m.checkStatus());
      }
      expect(seen).toEqual(["safe", "caution", "warning", "critical", "emergency"]);
      expect(fired).toHaveLength(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("level changes", () => {
  test("onLevelChange fires after a sample that changed checkStatus(), pressures included; unsubscribe stops it", async () => {
    const clock = new ManualClock();
    const source = new ScriptedSource(8);
    let remote: MemoryStatus = "safe";
    const monitor = createMemoryMonitor({ ...TUNING, source, now: clock.now, log: new RecordingLogger(), pressures: [{ checkStatus: () => remote }] });
    const seen: MemoryStatus[] = [];
    const off = monitor.onLevelChange((s) => seen.push(s));
    await monitor.sampleNow();
    await monitor.sampleNow();
    source.set(1.5);
    await monitor.sampleNow();
    remote = "critical";
    await monitor.sampleNow();
    expect(seen).toEqual(["safe", "warning", "critical"]);
    off();
    remote = "safe";
    await monitor.sampleNow();
    expect(seen).toHaveLength(3);
  });
});
