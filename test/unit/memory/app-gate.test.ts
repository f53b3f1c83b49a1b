/** The memory guard inside the real createApp, with FakeEngine and FakeMemoryMonitor. */
import { describe, expect, test } from "bun:test";
import { memoryInfo } from "../../../src/lifecycle/memory-info";
import type { MemoryStatus } from "../../../src/memory/types";
import { chunkText, makeApp, parseSse, postMessages, readSse, request, simpleBody, type Harness } from "../app/harness";

function harness(status: MemoryStatus = "safe", gb = 12, script?: Parameters<typeof makeApp>[0]) {
  const emergencies: string[] = [];
  let h!: Harness;
  h = makeApp({
    ...script,
    deps: { onEmergency: (r) => emergencies.push(r), memoryInfo: () => memoryInfo({ monitor: h.memory, state: h.state }) },
  });
  h.memory.set(status, gb);
  return { ...h, emergencies };
}

const headersOf = (r: Response) => [r.headers.get("x-memory-status"), r.headers.get("x-available-memory-gb")];

describe("createApp: memory headers on every route", () => {
  test("success, SSE, 401, 404, 400, 503, health, probe, swagger", async () => {
    const h = harness("warning", 1.75);
    const cases: [string, Response, number][] = [
      ["json", await postMessages(h, simpleBody()), 200],
      ["sse", await postMessages(h, simpleBody({ stream: true })), 200],
      ["count", await h.app.handle(request("/v1/messages/count_tokens", { method: "POST", json: simpleBody() })), 200],
      ["401", await postMessages(h, simpleBody(), { auth: false }), 401],
      ["404", await h.app.handle(request("/v1/nope")), 404],
      ["400", await postMessages(h, { model: "m" }), 400],
      ["health", await h.app.handle(request("/health", { auth: false })), 200],
      ["probe", await h.app.handle(request("/api/hello", { method: "HEAD", auth: false })), 200],
      ["swagger", await h.app.handle(request("/swagger", { auth: false })), 200],
      ["swagger json", await h.app.handle(request("/swagger/json", { auth: false })), 200],
    ];
    h.memory.set("critical", 0.9);
    cases.push(["503", await postMessages(h, simpleBody()), 503]);
    for (const [name, res, status] of cases) {
      expect([name, res.status]).toEqual([name, status]);
      expect([name, ...headersOf(res)]).toEqual(name === "503" ? [name, "critical", "0.90"] : [name, "warning", "1.75"]);
    }
    expect(cases[1]![1].headers.get("content-type")).toContain("text/event-stream");
  });
});

describe("createApp: the gate per status", () => {
  const expected: [MemoryStatus, number, number][] = [
    ["safe", 8, 200],
    ["caution", 2.5, 200],
    ["warning", 1.5, 200],
    ["critical", 0.9, 503],
    ["emergency", 0.4, 503],
  ];
  for (const [status, gb, code] of expected) {
    test(`${status}: /v1/messages ${code}, count_tokens ${code}`, async () => {
      const h = harness(status, gb);
      const res = await postMessages(h, simpleBody());
      expect(res.status).toBe(code);
      const count = await h.app.handle(request("/v1/messages/count_tokens", { method: "POST", json: simpleBody() }));
      expect(count.status).toBe(code);
      expect(h.engine.requests).toHaveLength(code === 200 ? 1 : 0);
      expect(h.engine.counted).toHaveLength(code === 200 ? 1 : 0);
      expect(h.emergencies.length > 0).toBe(status === "emergency");
    });
  }

  test("the 503: Anthropic body naming memory and GB, retry-after <= 60, x-should-retry", async () => {
    const h = harness("critical", 0.85);
    const res = await postMessages(h, simpleBody({ stream: true }));
    expect(res.status).toBe(503);
    const body = await res.json();
    expect(body).toEqual({
      type: "error",
      error: { type: "overloaded_error", message: expect.stringContaining("0.85 GB available") },
      request_id: res.headers.get("request-id"),
    });
    expect(body.error.message).toMatch(/memory/i);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(Number(res.headers.get("retry-after"))).toBeLessThanOrEqual(60);
    expect(res.headers.get("x-should-retry")).toBe("true");
    expect(res.headers.get("content-type")).toContain("application/json");
  });

  test("the models list and health stay open at Emergency", async () => {
    const h = harness("emergency", 0.2);
    expect((await h.app.handle(request("/v1/models"))).status).toBe(200);
    expect((await h.app.handle(request("/health", { auth: false }))).status).toBe(200);
  });
});

describe("createApp: in-flight requests and the emergency stream end", () => {
  test("a held stream is counted, then ended with event: error by abortAll", async () => {
    const h = harness("safe", 8, {
      engine: {
        script: [
          { type: "started", promptTokens: 5, cachedTokens: 0 },
          { type: "text", text: "Hel" },
          { type: "hold" },
          { type: "text", text: "lo" },
          { type: "done", finishReason: "stop", promptTokens: 5, completionTokens: 2, cachedTokens: 0 },
        ],
      },
    });
    const res = await postMessages(h, simpleBody({ stream: true }));
    expect(res.status).toBe(200);
    expect(h.state.inflight.count()).toBe(1);
    const health = await (await h.app.handle(request("/health"))).json();
    expect(health.memory.in_flight).toBe(1);
    const reader = res.body!.getReader();
    const first = await reader.read(); // message_start is out: the stream has started
    expect(first.done).toBe(false);
    h.state.inflight.abortAll(new Error("The server is shutting down: memory emergency: 0.40 GB available."));
    let rest = chunkText(first.value);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += chunkText(value);
    }
    const events = parseSse(rest);
    expect(events[0]!.event).toBe("message_start");
    expect(events.at(-1)).toEqual({
      event: "error",
      data: { type: "error", error: { type: "overloaded_error", message: "The server is shutting down: memory emergency: 0.40 GB available." }, request_id: res.headers.get("request-id") },
    });
    expect(events.some((e) => e.event === "message_stop")).toBe(false);
    expect(h.state.inflight.count()).toBe(0);
    await h.engine.idle();
    h.engine.release();
  });

  test("a completed stream and a JSON answer leave nothing in flight", async () => {
    const h = harness();
    const events = await readSse(await postMessages(h, simpleBody({ stream: true })));
    expect(events.at(-1)!.event).toBe("message_stop");
    expect((await postMessages(h, simpleBody())).status).toBe(200);
    await Bun.sleep(0);
    expect(h.state.inflight.count()).toBe(0);
  });

  test("after stopAccepting, inference gets the shutdown 503", async () => {
    const h = harness();
    h.state.stopAccepting("memory emergency: 0.40 GB available");
    const res = await postMessages(h, simpleBody());
    expect(res.status).toBe(503);
    expect((await res.json()).error.message).toContain("shutting down");
  });
});

describe("createApp: /health memory fields", () => {
  test("with the token: status, GB, thresholds, in-flight count and the engine's MLX memory", async () => {
    const h = harness("caution", 2.345);
    const body = await (await h.app.handle(request("/health"))).json();
    expect(body.memory).toEqual({
      status: "caution",
      available_gb: 2.345,
      thresholds_gb: { caution: 3, warning: 2, critical: 1, emergency: 0.5 },
      in_flight: 0,
      accepting: true,
    });
    expect(body.engine.state).toBe("ready");
    expect(body.engine.mlx).toEqual({ activeGb: 0.1, cacheGb: 0, peakGb: 0.2 });
  });
});
