import { describe, expect, test } from "bun:test";
import { createMemoryRelief, reliefFor } from "../../../src/lifecycle/relief";
import { FakeMemoryMonitor } from "../../support/fake-memory";

/** An engine that records relief calls (the only method relief uses). */
function fakeEngine(opts: { fail?: boolean; gate?: Promise<void> } = {}) {
  const calls: string[] = [];
  return {
    calls,
    async relieveMemory(level: "trim" | "drop") {
      calls.push(level);
      await opts.gate;
      if (opts.fail) throw new Error("worker busy");
    },
  };
}

describe("memory relief", () => {
  test("levels: safe none, caution trim, warning and worse drop", () => {
    expect(["safe", "caution", "warning", "critical", "emergency"].map((s) => reliefFor(s as never))).toEqual([
      "none",
      "trim",
      "drop",
      "drop",
      "drop",
    ]);
  });

  test("trims on entering Caution, drops on entering Warning, once per episode, again after recovery", async () => {
    const monitor = new FakeMemoryMonitor();
    const engine = fakeEngine();
    const relief = createMemoryRelief({ monitor, engine });
    const at = async (s: Parameters<FakeMemoryMonitor["set"]>[0]) => {
      monitor.set(s, 1);
      await relief.check();
    };
    await at("safe");
    expect(engine.calls).toEqual([]);
    await at("caution");
    await at("caution");
    expect(engine.calls).toEqual(["trim"]);
    await at("warning");
    await at("critical");
    await at("warning");
    expect(engine.calls).toEqual(["trim", "drop"]);
    // Back to Caution: nothing to trim that was not dropped; a new Warning drops again.
    await at("caution");
    expect(engine.calls).toEqual(["trim", "drop"]);
    await at("warning");
    expect(engine.calls).toEqual(["trim", "drop", "drop"]);
    await at("safe");
    expect(relief.applied()).toBe("none");
    await at("caution");
    expect(engine.calls).toEqual(["trim", "drop", "drop", "trim"]);
  });

  test("a jump from Safe straight to Critical drops at once, without a trim first", async () => {
    const monitor = new FakeMemoryMonitor();
    const engine = fakeEngine();
    const relief = createMemoryRelief({ monitor, engine });
    monitor.set("critical", 0.9);
    await relief.check();
    expect(engine.calls).toEqual(["drop"]);
  });

  test("a failing engine is logged, not retried every tick of the same episode", async () => {
    const monitor = new FakeMemoryMonitor({ status: "warning" });
    const engine = fakeEngine({ fail: true });
    const warnings: string[] = [];
    const relief = createMemoryRelief({ monitor, engine, log: { info() {}, warn: (m) => warnings.push(m) } });
    await relief.check();
    await relief.check();
    expect(engine.calls).toEqual(["drop"]);
    expect(warnings).toEqual(["memory relief failed"]);
  });

  test("checks never overlap: a slow relief call is not repeated by concurrent checks", async () => {
    const monitor = new FakeMemoryMonitor({ status: "caution" });
    let open!: () => void;
    const engine = fakeEngine({ gate: new Promise<void>((r) => (open = r)) });
    const relief = createMemoryRelief({ monitor, engine });
    const a = relief.check();
    const b = relief.check();
    open();
    await Promise.all([a, b]);
    expect(engine.calls).toEqual(["trim"]);
  });

  test("start polls the monitor on its own timer; an engine without relieveMemory is left alone", async () => {
    const monitor = new FakeMemoryMonitor();
    const engine = fakeEngine();
    const relief = createMemoryRelief({ monitor, engine, intervalMs: 10 });
    relief.start();
    monitor.set("warning", 1.5);
    const deadline = Date.now() + 5000;
    while (engine.calls.length === 0 && Date.now() < deadline) await Bun.sleep(5);
    relief.stop();
    expect(engine.calls).toEqual(["drop"]);

    const none = createMemoryRelief({ monitor, engine: {}, intervalMs: 10 });
    none.start();
    await none.check();
    none.stop();
    expect(none.applied()).toBe("none"); // nothing could be relieved
  });
});
