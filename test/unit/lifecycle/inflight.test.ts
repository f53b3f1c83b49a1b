import { describe, expect, test } from "bun:test";
import { InflightRegistry } from "../../../src/lifecycle/inflight";

describe("InflightRegistry", () => {
  test("register, count, snapshot (id, route, age), unregister", () => {
    let now = 1000;
    const r = new InflightRegistry(() => now);
    const a = r.register("req_a", "POST /v1/messages");
    now = 1500;
    r.register("req_b", "POST /v1/messages/count_tokens");
    now = 2000;
    expect(r.count()).toBe(2);
    expect(r.snapshot()).toEqual([
      { id: "req_a", route: "POST /v1/messages", ageMs: 1000, streaming: false },
      { id: "req_b", route: "POST /v1/messages/count_tokens", ageMs: 500, streaming: false },
    ]);
    r.unregister(a);
    r.unregister(a);
    expect(r.count()).toBe(1);
  });

  test("a stale entry cannot remove a newer one with the same id", () => {
    const r = new InflightRegistry();
    const old = r.register("req_a");
    r.register("req_a");
    r.unregister(old);
    expect(r.count()).toBe(1);
  });

  test("waitForDrain resolves true when the last request leaves, false on timeout", async () => {
    const r = new InflightRegistry();
    expect(await r.waitForDrain(10)).toBe(true);
    const a = r.register("req_a");
    expect(await r.waitForDrain(10)).toBe(false);
    const waiting = r.waitForDrain(10_000);
    r.unregister(a);
    expect(await waiting).toBe(true);
  });

  test("abortAll aborts each live controller once, with the reason", () => {
    const r = new InflightRegistry();
    const a = r.register("req_a");
    const b = r.register("req_b");
    const reason = new Error("shutting down");
    expect(r.abortAll(reason)).toBe(2);
    expect(a.controller.signal.reason).toBe(reason);
    expect(b.controller.signal.aborted).toBe(true);
    expect(r.abortAll(reason)).toBe(0);
  });
});
