/**
 * The memory guard on a small Elysia app shaped like createApp (global onError with
 * mapError, the request scope, auth, validated routes, an SSE generator).
 */
import { describe, expect, test } from "bun:test";
import { Elysia, sse, t } from "elysia";
import { AuthenticationError, mapError, newRequestId } from "../../../src/anthropic/errors";
import { ADMISSION_HINT, messagesKvDemand } from "../../../src/anthropic/estimate";
import { errorEvent } from "../../../src/anthropic/stream";
import { memoryGuard, type MemoryGuardOptions } from "../../../src/http/memory-guard";
import { requestScope } from "../../../src/http/request-scope";
import { GuardState } from "../../../src/lifecycle/guard-state";
import type { MemoryStatus } from "../../../src/memory/types";
import { FakeMemoryMonitor } from "../../support/fake-memory";
import { RecordingLogger } from "../../support/memory-kit";
import { httpDefaults } from "../../../src/config";

/** A stream route the test steps by hand: each `step()` lets one more event out. */
class Valve {
  private waiters: (() => void)[] = [];
  private credits = 0;
  step() {
    const w = this.waiters.shift();
    if (w) w();
    else this.credits += 1;
  }
  wait() {
    if (this.credits > 0) {
      this.credits -= 1;
      return Promise.resolve();
    }
    return new Promise<void>((r) => this.waiters.push(r));
  }
}

function makeApp(opts: Partial<MemoryGuardOptions> & { status?: MemoryStatus; gb?: number; valve?: Valve } = {}) {
  const monitor = new FakeMemoryMonitor({ status: opts.status ?? "safe", availableGb: opts.gb ?? 12 });
  const log = new RecordingLogger();
  const emergencies: string[] = [];
  const state = opts.state ?? new GuardState();
  const valve = opts.valve ?? new Valve();
  const handled: string[] = [];
  const scope = requestScope(newRequestId);
  const guard: MemoryGuardOptions = {
    retryAfterSeconds: httpDefaults.memoryRetryAfterSeconds,
    monitor,
    log,
    state,
    scope,
    estimate: messagesKvDemand,
    admissionHint: ADMISSION_HINT,
    streamError: (reason, id) => sse(errorEvent("overloaded_error", reason, id)),
    onEmergency: (r) => emergencies.push(r),
    ...opts,
  };
  const app = new Elysia()
    .use(scope)
    .onError({ as: "global" }, ({ error, set, requestId }) => {
      const mapped = mapError(error, requestId);
      set.status = mapped.status;
      Object.assign(set.headers, mapped.headers);
      return mapped.body;
    })
    .use(memoryGuard(guard))
    .onBeforeHandle({ as: "global" }, ({ request, path }) => {
      if (path.startsWith("/v1/") && request.headers.get("x-api-key") !== "k") throw new AuthenticationError();
    })
    .get("/health", () => ({ status: "ok" }))
    .get("/swagger", () => new Response("<html>docs</html>", { headers: { "content-type": "text/html" } }))
    .get("/v1/models", () => ({ data: [] }))
    .post(
      "/v1/messages",
      async function* ({ body }) {
        handled.push("messages");
        if (!body.stream) return { type: "message", content: [] };
        for (let i = 0; i < 3; i++) {
          await valve.wait();
          yield sse({ event: "ping", data: { type: "ping", i } });
        }
      },
      { body: t.Object({ model: t.String(), max_tokens: t.Number(), stream: t.Optional(t.Boolean()), messages: t.Array(t.Any()) }) },
    )
    .post("/v1/messages/count_tokens", () => {
      handled.push("count");
      return { input_tokens: 3 };
    });
  return { app, monitor, log, emergencies, state, valve, handled };
}

const AUTH = { "x-api-key": "k", "content-type": "application/json" };
const BODY = { model: "claude-x", max_tokens: 16, messages: [{ role: "user", content: "hi" }] };

function post(path: string, body: unknown = BODY, headers: Record<string, string> = AUTH) {
  return new Request(`http://localhost${path}`, { method: "POST", headers, body: JSON.stringify(body) });
}
const get = (path: string) => new Request(`http://localhost${path}`, { headers: { "x-api-key": "k" } });

function expectMemoryHeaders(res: Response, status: string, gb: string) {
  expect(res.headers.get("x-memory-status")).toBe(status);
  expect(res.headers.get("x-available-memory-gb")).toBe(gb);
}

describe("X-Memory-Status and X-Available-Memory-GB on every response", () => {
  test("success, 401, 404, 400, SSE, health and docs", async () => {
    const { app, valve } = makeApp({ status: "caution", gb: 2.5 });
    const responses: [string, Response][] = [
      ["json", await app.handle(post("/v1/messages"))],
      ["401", await app.handle(post("/v1/messages", BODY, { "content-type": "application/json" }))],
      ["404", await app.handle(get("/nope"))],
      ["400", await app.handle(post("/v1/messages", { model: 1 }))],
      ["malformed", await app.handle(new Request("http://localhost/v1/messages", { method: "POST", headers: AUTH, body: "{" }))],
      ["health", await app.handle(get("/health"))],
      ["docs", await app.handle(get("/swagger"))],
      ["models", await app.handle(get("/v1/models"))],
    ];
    const sseRes = app.handle(post("/v1/messages", { ...BODY, stream: true }));
    valve.step();
    const streamed = await sseRes;
    valve.step();
    valve.step();
    responses.push(["sse", streamed]);
    expect(responses.map(([name, r]) => [name, r.status])).toEqual([
      ["json", 200],
      ["401", 401],
      ["404", 404],
      ["400", 400],
      ["malformed", 400],
      ["health", 200],
      ["docs", 200],
      ["models", 200],
      ["sse", 200],
    ]);
    for (const [, r] of responses) expectMemoryHeaders(r, "caution", "2.50");
    expect(streamed.headers.get("content-type")).toContain("text/event-stream");
    expect(await streamed.text()).toContain("event: ping");
  });

  test("an unknown figure (no sample yet) reads 'unknown'", async () => {
    const { app } = makeApp({ gb: Number.NaN });
    expectMemoryHeaders(await app.handle(get("/health")), "safe", "unknown");
  });
});

describe("the gate, per status", () => {
  for (const status of ["safe", "caution"] as const) {
    test(`${status}: serves without a warning`, async () => {
      const { app, log, handled } = makeApp({ status, gb: status === "safe" ? 8 : 2.5 });
      expect((await app.handle(post("/v1/messages"))).status).toBe(200);
      expect(handled).toEqual(["messages"]);
      expect(log.at("warn")).toEqual([]);
    });
  }

  test("warning: serves and logs a warning", async () => {
    const { app, log, handled } = makeApp({ status: "warning", gb: 1.5 });
    expect((await app.handle(post("/v1/messages"))).status).toBe(200);
    expect(handled).toEqual(["messages"]);
    expect(log.at("warn").map((l) => l.msg)).toEqual(["memory gate: Warning, serving"]);
  });

  test("critical: 503 overloaded_error naming memory and the GB, with retry headers; handler skipped", async () => {
    const { app, handled, emergencies } = makeApp({ status: "critical", gb: 0.8 });
    const res = await app.handle(post("/v1/messages"));
    expect(res.status).toBe(503);
    const body = (await res.json()) as { type: string; error: { type: string; message: string }; request_id: string };
    expect(body.type).toBe("error");
    expect(body.error.type).toBe("overloaded_error");
    expect(body.error.message).toMatch(/memory/i);
    expect(body.error.message).toContain("0.80 GB available");
    expect(body.request_id).toBe(res.headers.get("request-id")!);
    expect(body.request_id).toMatch(/^req_/);
    const retry = Number(res.headers.get("retry-after"));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(res.headers.get("x-should-retry")).toBe("true");
    expect(res.headers.get("content-type")).toContain("application/json");
    expectMemoryHeaders(res, "critical", "0.80");
    expect(handled).toEqual([]);
    expect(emergencies).toEqual([]);
  });

  test("emergency: rejects at once and calls onEmergency", async () => {
    const { app, handled, emergencies } = makeApp({ status: "emergency", gb: 0.3 });
    const res = await app.handle(post("/v1/messages", { ...BODY, stream: true }));
    expect(res.status).toBe(503);
    const body = (await res.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe("overloaded_error");
    expect(body.error.message).toContain("0.30 GB available");
    expect(res.headers.get("x-should-retry")).toBe("true");
    expect(handled).toEqual([]);
    expect(emergencies).toHaveLength(1);
    expect(emergencies[0]).toContain("0.30 GB");
  });

  test("count_tokens is gated too", async () => {
    const { app, handled } = makeApp({ status: "critical", gb: 0.9 });
    expect((await app.handle(post("/v1/messages/count_tokens"))).status).toBe(503);
    expect(handled).toEqual([]);
  });

  test("non-inference routes stay open at Critical and Emergency", async () => {
    for (const status of ["critical", "emergency"] as const) {
      const { app, emergencies } = makeApp({ status, gb: 0.2 });
      expect((await app.handle(get("/health"))).status).toBe(200);
      expect((await app.handle(get("/v1/models"))).status).toBe(200);
      expect(emergencies).toEqual([]);
    }
  });

  test("the gate follows the monitor from one request to the next", async () => {
    const { app, monitor } = makeApp();
    expect((await app.handle(post("/v1/messages"))).status).toBe(200);
    monitor.set("critical", 0.9);
    expect((await app.handle(post("/v1/messages"))).status).toBe(503);
    monitor.set("caution", 2.9);
    expect((await app.handle(post("/v1/messages"))).status).toBe(200);
  });

  test("retry-after is configurable but never above 60", async () => {
    const { app } = makeApp({ status: "critical", gb: 0.9, retryAfterSeconds: 600 });
    expect((await app.handle(post("/v1/messages"))).headers.get("retry-after")).toBe("60");
  });

  test("once the shutdown stops accepting, inference gets 503 whatever the status", async () => {
    const { app, state } = makeApp({ status: "safe", gb: 8 });
    state.stopAccepting("memory emergency: 0.40 GB available");
    const res = await app.handle(post("/v1/messages"));
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain("shutting down");
    expect((await app.handle(get("/health"))).status).toBe(200);
  });
});

describe("in-flight registry", () => {
  test("counts a stream while it runs and forgets it when it ends", async () => {
    const { app, state, valve } = makeApp();
    const pending = app.handle(post("/v1/messages", { ...BODY, stream: true }));
    valve.step();
    const res = await pending;
    expect(state.inflight.count()).toBe(1);
    const [entry] = state.inflight.snapshot();
    expect(entry!.id).toBe(res.headers.get("request-id")!);
    expect(entry!.route).toBe("POST /v1/messages");
    expect(entry!.streaming).toBe(true);
    valve.step();
    valve.step();
    await res.text();
    expect(state.inflight.count()).toBe(0);
  });

  test("JSON answers, refusals and errors leave nothing behind", async () => {
    const { app, state, monitor } = makeApp();
    await app.handle(post("/v1/messages"));
    await app.handle(post("/v1/messages/count_tokens"));
    await app.handle(post("/v1/messages", BODY, { "content-type": "application/json" }));
    monitor.set("critical", 0.9);
    await app.handle(post("/v1/messages"));
    await Bun.sleep(0);
    expect(state.inflight.count()).toBe(0);
  });

  test("abortAll ends an open stream with an SSE error event instead of hanging", async () => {
    const { app, state, valve } = makeApp();
    const pending = app.handle(post("/v1/messages", { ...BODY, stream: true }));
    valve.step();
    const res = await pending;
    expect(state.inflight.abortAll(new Error("The server is shutting down: memory emergency."))).toBe(1);
    const text = await res.text();
    expect(text).toContain("event: ping");
    expect(text).toMatch(/event: error\ndata: \{"type":"error","error":\{"type":"overloaded_error","message":"The server is shutting down: memory emergency\."\}/);
    expect(text.trim().endsWith("}")).toBe(true);
    expect(state.inflight.count()).toBe(0);
  });

  test("abortAll before anything was sent fails the request with a JSON 503", async () => {
    const { app, state } = makeApp();
    const pending = app.handle(post("/v1/messages", { ...BODY, stream: true }));
    while (state.inflight.count() === 0) await Bun.sleep(1);
    state.inflight.abortAll(new Error("The server is shutting down: memory emergency."));
    const res = await pending;
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { type: string } }).error.type).toBe("overloaded_error");
    expect(state.inflight.count()).toBe(0);
  });
});

describe("admission (estimated KV cache vs. the Critical level)", () => {
  const model = { kvBytesPerToken: 1024 * 1024, contextLength: 8192 }; // 1 MiB per token

  test("a request whose KV cache would push memory into Critical gets the 503 before work starts", async () => {
    // 2.5 GB available; 2000 max_tokens ~ 1.95 GB -> ~0.55 GB left: Critical.
    const { app, handled } = makeApp({ status: "caution", gb: 2.5, model: () => model });
    const res = await app.handle(post("/v1/messages", { ...BODY, max_tokens: 2000 }));
    expect(res.status).toBe(503);
    const body = (await res.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe("overloaded_error");
    expect(body.error.message).toContain("2.50 GB available");
    expect(res.headers.get("x-should-retry")).toBe("true");
    expect(handled).toEqual([]);
  });

  test("a request that fits stays above Critical and is served", async () => {
    const { app, handled } = makeApp({ status: "caution", gb: 2.5, model: () => model });
    expect((await app.handle(post("/v1/messages", { ...BODY, max_tokens: 256 }))).status).toBe(200);
    expect(handled).toEqual(["messages"]);
  });

  test("plenty of memory skips the estimate entirely; count_tokens is never refused by admission", async () => {
    const { app } = makeApp({ status: "safe", gb: 64, model: () => model });
    expect((await app.handle(post("/v1/messages", { ...BODY, max_tokens: 8192 }))).status).toBe(200);
    const tight = makeApp({ status: "caution", gb: 2.5, model: () => model });
    expect((await tight.app.handle(post("/v1/messages/count_tokens", { ...BODY, max_tokens: 8000 }))).status).toBe(200);
  });
});
