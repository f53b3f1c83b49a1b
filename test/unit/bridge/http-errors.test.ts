/** What a client sees of worker trouble: the HTTP app over MlxEngine and the fake worker. */

import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { appTuning, createApp } from "../../../src/app";
import { FakeMemoryMonitor } from "../../support/fake-memory";
import { FAKE_SECRET, type FakeSetup, fakeEngines } from "./helpers";
import { serveDefaults } from "../../../src/config";

// Spawns processes; a loaded 2-core machine can be slow.
setDefaultTimeout(30_000);

const setup = fakeEngines();
const TOKEN = "test-token";

function appOver(s: FakeSetup) {
  const config = {
    ...appTuning(serveDefaults()),
    token: TOKEN,
    aliases: "*=default",
    allowedHosts: [],
    version: "0.0.0-test",
    stream: { headStartMs: Number.POSITIVE_INFINITY, pingIntervalMs: Number.POSITIVE_INFINITY },
  };
  return createApp({ engine: s.engine, memory: new FakeMemoryMonitor(), config, docs: false });
}

function post(app: ReturnType<typeof appOver>, path: string, body: Record<string, unknown>): Promise<Response> {
  const headers = { "x-api-key": TOKEN, "content-type": "application/json" };
  return app.handle(new Request(`http://localhost${path}`, { method: "POST", headers, body: JSON.stringify(body) }));
}

const message = (content: string, extra: Record<string, unknown> = {}) => ({
  model: "claude-sonnet-4-5",
  max_tokens: 16,
  messages: [{ role: "user", content }],
  ...extra,
});

describe("a worker crash over HTTP", () => {
  test("the 500 gives a short cause; the worker's stderr reaches the server log once, with the pid", async () => {
    const s = setup();
    await s.engine.start();
    const pid = (await s.engine.stats()).workerPid;
    const app = appOver(s);
    const res = await post(app, "/v1/messages", message("crash"));
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(text).not.toContain(FAKE_SECRET);
    expect(text).not.toContain("secret.py");
    expect(JSON.parse(text).error).toEqual({
      type: "api_error",
      message: "the model worker crashed (exit code 3); see the server log",
    });
    const logged = s.logs.filter((l) => JSON.stringify(l.fields ?? {}).includes(FAKE_SECRET));
    expect(logged).toHaveLength(1);
    expect(logged[0]?.fields?.pid).toBe(pid);
  });

  test("a crash mid-stream: the SSE error event does not carry the stderr either", async () => {
    const s = setup();
    await s.engine.start();
    const res = await post(appOver(s), "/v1/messages", message("crash", { stream: true }));
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).not.toContain(FAKE_SECRET);
    expect(text).toContain("event: error");
    expect(text).toContain("the model worker crashed (exit code 3)");
  });
});

describe("token counts over HTTP", () => {
  test("count_tokens beyond the queue bound -> 529 overloaded_error with retry-after", async () => {
    const s = setup({ queueLimit: 1 }, { FAKE_WORKER_COUNT_MS: "400" });
    await s.engine.start();
    const app = appOver(s);
    expect((await post(app, "/v1/messages/count_tokens", message("warm"))).status).toBe(200);
    const responses = await Promise.all([1, 2, 3].map(() => post(app, "/v1/messages/count_tokens", message("slowcount"))));
    expect(responses.map((r) => r.status).sort()).toEqual([200, 200, 529]);
    const refused = responses.find((r) => r.status === 529) as Response;
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect((await refused.json()).error.type).toBe("overloaded_error");
  });
});
