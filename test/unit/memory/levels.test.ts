import { describe, expect, test } from "bun:test";
import { memoryThresholds, serveDefaults } from "../../../src/config";
import { LevelTracker, STATUS_ORDER, checkThresholds, classify, severity, worse } from "../../../src/memory/levels";
import type { MemoryStatus } from "../../../src/memory/types";

const DEFAULT_THRESHOLDS = memoryThresholds(serveDefaults());

describe("classify: both sides of every threshold (defaults 3 / 2 / 1 / 0.5)", () => {
  const cases: [number, MemoryStatus][] = [
    [64, "safe"],
    [3.01, "safe"],
    [3, "caution"],
    [2.01, "caution"],
    [2, "warning"],
    [1.01, "warning"],
    [1, "critical"],
    [0.51, "critical"],
    [0.5, "emergency"],
    [0.1, "emergency"],
    [0, "emergency"],
  ];
  for (const [gb, status] of cases) {
    test(`${gb} GB -> ${status}`, () => {
      expect(classify(gb, DEFAULT_THRESHOLDS)).toBe(status);
    });
  }

  test("custom thresholds move every boundary", () => {
    const t = checkThresholds({ caution: 8, warning: 6, critical: 4, emergency: 2 });
    expect([8.001, 8, 6.001, 6, 4.001, 4, 2.001, 2].map((gb) => classify(gb, t))).toEqual([
      "safe",
      "caution",
      "caution",
      "warning",
      "warning",
      "critical",
      "critical",
      "emergency",
    ]);
  });

  test("NaN never classifies as plenty", () => {
    expect(classify(Number.NaN, DEFAULT_THRESHOLDS)).toBe("emergency");
  });
});

describe("checkThresholds", () => {
  const given = (over: Partial<typeof DEFAULT_THRESHOLDS>) => ({ ...DEFAULT_THRESHOLDS, ...over });
  test("keeps valid thresholds (the serve defaults are 3 / 2 / 1 / 0.5)", () => {
    expect(checkThresholds(given({ critical: 1.5 }))).toEqual({ caution: 3, warning: 2, critical: 1.5, emergency: 0.5 });
  });
  test("rejects thresholds that do not decrease", () => {
    expect(() => checkThresholds(given({ warning: 3 }))).toThrow(/decrease/);
    expect(() => checkThresholds(given({ emergency: 1 }))).toThrow(/decrease/);
  });
  test("rejects negative or non-finite values", () => {
    expect(() => checkThresholds(given({ emergency: -1 }))).toThrow(/non-negative/);
    expect(() => checkThresholds(given({ caution: Number.POSITIVE_INFINITY }))).toThrow(/non-negative/);
  });
});

describe("severity and worse", () => {
  test("order is safe < caution < warning < critical < emergency", () => {
    expect(STATUS_ORDER.map(severity)).toEqual([0, 1, 2, 3, 4]);
  });
  test("worse picks the more severe", () => {
    expect(worse("safe", "warning")).toBe("warning");
    expect(worse("emergency", "caution")).toBe("emergency");
    expect(worse("critical", "critical")).toBe("critical");
  });
});

describe("LevelTracker (hysteresis)", () => {
  test("the first reading applies directly", () => {
    const tr = new LevelTracker({ marginGb: 0.25, samples: 3 });
    expect(tr.level()).toBeNull();
    expect(tr.update("warning", "warning")).toBe("warning");
  });

  test("escalation is immediate, even by several levels", () => {
    const tr = new LevelTracker({ marginGb: 0.25, samples: 3 });
    tr.update("safe", "safe");
    expect(tr.update("critical", "critical")).toBe("critical");
  });

  test("de-escalation waits for N consecutive readings clear of the margin", () => {
    const tr = new LevelTracker({ marginGb: 0.25, samples: 3 });
    tr.update("critical", "critical");
    expect(tr.update("safe", "safe")).toBe("critical");
    expect(tr.update("safe", "safe")).toBe("critical");
    expect(tr.update("safe", "safe")).toBe("safe");
  });

  test("a reading inside the margin resets the streak", () => {
    const tr = new LevelTracker({ marginGb: 0.25, samples: 2 });
    tr.update("warning", "warning");
    tr.update("caution", "caution");
    // Better than Warning by value, but within the margin of the boundary: not qualifying.
    expect(tr.update("caution", "warning")).toBe("warning");
    expect(tr.update("caution", "caution")).toBe("warning");
    expect(tr.update("caution", "caution")).toBe("caution");
  });

  test("steps down only as far as the worst reading of the streak", () => {
    const tr = new LevelTracker({ marginGb: 0.25, samples: 3 });
    tr.update("critical", "critical");
    tr.update("safe", "safe");
    tr.update("caution", "caution");
    expect(tr.update("safe", "safe")).toBe("caution");
  });

  test("an escalation during a recovery streak wins at once and restarts the count", () => {
    const tr = new LevelTracker({ marginGb: 0.25, samples: 2 });
    tr.update("warning", "warning");
    tr.update("safe", "safe");
    expect(tr.update("critical", "critical")).toBe("critical");
    expect(tr.update("safe", "safe")).toBe("critical");
    expect(tr.update("safe", "safe")).toBe("safe");
  });

  test("rejects nonsense settings", () => {
    expect(() => new LevelTracker({ marginGb: -1, samples: 3 })).toThrow();
    expect(() => new LevelTracker({ marginGb: 0.1, samples: 0 })).toThrow();
  });
});
