import { describe, expect, test } from "bun:test";
import { createMemoryRelief, reliefFor } from "../../../src/lifecycle/relief";
import type { MemoryStatus } from "../../../src/memory/types";
import { FakeMemoryMonitor } from "../../support/fake-memory";

/** A fake monitor that publishes level changes, as the sampled monitor does after each sample. */
class PublishingMonitor extends FakeMemoryMonitor {
  readonly handlers = new Set<(s: MemoryStatus) => void>();
  onLevelChange(h: (s: MemoryStatus) => void) {
    this.handlers.add(h);
    return () => void this.handlers.delete(h);
  }
  publish(status: MemoryStatus, gb: number) {
    this.set(status, gb);
    for (const h of this.handlers) h(status);
  }
}

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

  test("start acts on the monitor's level changes, with no timer of its own; an engine without relieveMemory is left alone", async () => {
    const monitor = new PublishingMonitor();
    const engine = fakeEngine();
    const relief = createMemoryRelief({ monitor, engine });
    relief.start();
    const settle = () => Bun.sleep(1); // the check a change started runs on its own
    monitor.publish("warning", 1.5);
    await settle();
    expect(engine.calls).toEqual(["drop"]);
    monitor.publish("safe", 8);
    await settle();
    monitor.publish("caution", 2.5);
    await settle();
    expect(engine.calls).toEqual(["drop", "trim"]);
    relief.stop();
    expect(monitor.handlers.size).toBe(0);

    const none = createMemoryRelief({ monitor, engine: {} });
    none.start();
    await none.check();
    none.stop();
    expect(none.applied()).toBe("none"); // nothing could be relieved
  });
});
