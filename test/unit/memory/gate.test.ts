import { describe, expect, test } from "bun:test";
import { mapError } from "../../../src/anthropic/errors";
import { estimatePromptTokens, messagesKvDemand } from "../../../src/anthropic/estimate";
import { ServiceUnavailableError } from "../../../src/http/errors";
import { admissionError, emergencyMemoryError, lowMemoryError, shuttingDownError } from "../../../src/http/memory-guard";
import { GuardState } from "../../../src/lifecycle/guard-state";
import { admit, estimateKvBytes, fitsWholeContext, gateAction } from "../../../src/memory/gate";
import { BYTES_PER_GB } from "../../../src/memory/levels";
import { FakeMemoryMonitor } from "../../support/fake-memory";
import { httpDefaults } from "../../../src/config";

describe("gateAction", () => {
  test("Safe/Caution serve, Warning warns, Critical rejects, Emergency shuts down", () => {
    expect(gateAction("safe")).toBe("serve");
    expect(gateAction("caution")).toBe("serve");
    expect(gateAction("warning")).toBe("warn");
    expect(gateAction("critical")).toBe("reject");
    expect(gateAction("emergency")).toBe("emergency");
  });
});

const RETRY_S = httpDefaults.memoryRetryAfterSeconds;

describe("refusal errors", () => {
  test("are 503 overloaded_error with retry headers capped at 60 s", () => {
    for (const err of [lowMemoryError(0.8, 1, 120), emergencyMemoryError(0.3, 5), shuttingDownError("memory emergency", 5)]) {
      expect(err).toBeInstanceOf(ServiceUnavailableError);
      expect(err.status).toBe(503);
      expect(err.kind).toBe("overloaded");
      expect(mapError(err, null).body.error.type).toBe("overloaded_error");
      expect(err.headers["x-should-retry"]).toBe("true");
      expect(Number(err.headers["retry-after"])).toBeLessThanOrEqual(60);
    }
    expect(lowMemoryError(0.8, 1, RETRY_S).message).toContain("memory is low: 0.80 GB available");
    expect(emergencyMemoryError(Number.NaN, RETRY_S).message).toContain("unknown GB available");
  });
});

describe("KV-cache estimate", () => {
  const model = { kvBytesPerToken: 4096, contextLength: 2048 };
  test("(prompt + max_tokens) x bytes per token", () => {
    expect(estimateKvBytes(100, 156, model)).toBe(256 * 4096);
  });
  test("capped at the context, and never negative", () => {
    expect(estimateKvBytes(5000, 5000, model)).toBe(2048 * 4096);
    expect(estimateKvBytes(-5, -5, model)).toBe(0);
  });
  test("prompt tokens from a body: text characters / 3, rounded up", () => {
    const body = { model: "claude-x", max_tokens: 10, system: "abc", messages: [{ role: "user", content: [{ type: "text", text: "abcdef" }] }] };
    // "abc" + "user" + "text" + "abcdef" = 17 characters -> 6 tokens.
    expect(estimatePromptTokens(body)).toBe(6);
    expect(estimatePromptTokens(null)).toBe(0);
  });
  test("the Messages demand: prompt + max_tokens; none for count_tokens or without max_tokens", () => {
    const body = { max_tokens: 10, messages: [{ role: "user", content: "abcdef" }] };
    expect(messagesKvDemand(body, "/v1/messages")).toEqual({ promptTokens: 4, maxTokens: 10 });
    expect(messagesKvDemand(body, "/v1/messages/count_tokens")).toBeNull();
    expect(messagesKvDemand({ messages: [] }, "/v1/messages")).toBeNull();
  });
});

describe("admit", () => {
  const GB = BYTES_PER_GB;

  test("both sides of the Critical boundary (1 GB by default)", () => {
    const m = new FakeMemoryMonitor({ status: "caution", availableGb: 2.5 });
    expect(admit(m, 1.49 * GB)).toBeNull(); // leaves 1.01 GB: Warning
    const refusal = admit(m, 1.5 * GB); // leaves exactly 1 GB: Critical
    expect(refusal).toEqual({ needGb: 1.5, availableGb: 2.5, criticalGb: 1 });
    const err = admissionError(refusal!.needGb, refusal!.availableGb, refusal!.criticalGb, "Retry later.", RETRY_S);
    expect(err).toBeInstanceOf(ServiceUnavailableError);
    expect(err.message).toContain("2.50 GB available");
    expect(err.message).toContain("1.50 GB of KV cache");
  });

  test("follows custom thresholds", () => {
    const m = new FakeMemoryMonitor({ availableGb: 10, thresholds: { caution: 8, warning: 6, critical: 4, emergency: 2 } });
    expect(admit(m, 5.9 * GB)).toBeNull();
    expect(admit(m, 6 * GB)).not.toBeNull();
  });

  test("nothing to estimate, or no figure yet: admit", () => {
    expect(admit(new FakeMemoryMonitor({ availableGb: 0.1 }), 0)).toBeNull();
    expect(admit(new FakeMemoryMonitor({ availableGb: Number.NaN }), 50 * GB)).toBeNull();
  });

  test("fitsWholeContext: a full context above Critical needs no estimate", () => {
    const model = { kvBytesPerToken: 1024 * 1024, contextLength: 1024 }; // 1 GB at full context
    expect(fitsWholeContext(new FakeMemoryMonitor({ availableGb: 2.01 }), model)).toBe(true);
    expect(fitsWholeContext(new FakeMemoryMonitor({ availableGb: 2 }), model)).toBe(false);
    expect(fitsWholeContext(new FakeMemoryMonitor({ availableGb: Number.NaN }), model)).toBe(false);
  });
});

describe("GuardState", () => {
  test("stopAccepting keeps the first reason", () => {
    const s = new GuardState();
    expect(s.accepting()).toBe(true);
    s.stopAccepting("first");
    s.stopAccepting("second");
    expect(s.accepting()).toBe(false);
    expect(s.stopReason()).toBe("first");
  });
});
