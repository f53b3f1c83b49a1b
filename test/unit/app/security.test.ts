import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { presentedToken, tokenMatches } from "../../../src/http/auth";
import { BASE, makeApp, postMessages, request, simpleBody, TOKEN } from "./harness";

async function expectError(res: Response, status: number, type: string) {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toContain("application/json");
  const body = await res.json();
  expect(body).toEqual({ type: "error", error: { type, message: expect.any(String) }, request_id: expect.stringMatching(/^req_/) });
  expect(res.headers.get("request-id")).toBe(body.request_id);
  return body.error.message as string;
}

describe("auth", () => {
  test("x-api-key and Authorization: Bearer are both accepted", async () => {
    const h = makeApp();
    expect((await postMessages(h, simpleBody(), { headers: { "x-api-key": TOKEN } })).status).toBe(200);
    expect((await postMessages(h, simpleBody(), { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
  });

  test("wrong or missing token -> 401 authentication_error", async () => {
    const h = makeApp();
    await expectError(await postMessages(h, simpleBody(), { headers: { "x-api-key": "nope" } }), 401, "authentication_error");
    await expectError(await postMessages(h, simpleBody(), { headers: { authorization: "Bearer nope" } }), 401, "authentication_error");
    await expectError(await postMessages(h, simpleBody(), { headers: { authorization: "Basic abc" } }), 401, "authentication_error");
    await expectError(await postMessages(h, simpleBody(), { auth: false }), 401, "authentication_error");
    await expectError(await h.app.handle(request("/v1/models", { auth: false })), 401, "authentication_error");
    expect(h.engine.requests).toHaveLength(0);
  });

  test("health, the probe and the docs stay open", async () => {
    const h = makeApp();
    for (const [method, path] of [
      ["GET", "/health"],
      ["GET", "/api/hello"],
      ["HEAD", "/api/hello"],
      ["GET", "/swagger"],
      ["GET", "/swagger/json"],
    ])
      expect((await h.app.handle(request(path!, { method, auth: false }))).status).toBe(200);
  });

  test("token helpers: digest compare, header parsing", () => {
    const expected = createHash("sha256").update("secret").digest();
    expect(tokenMatches("secret", expected)).toBe(true);
    expect(tokenMatches("secre", expected)).toBe(false);
    expect(tokenMatches("", expected)).toBe(false);
    expect(presentedToken(new Headers({ authorization: "bearer  abc " }))).toBe("abc");
    expect(presentedToken(new Headers({ "x-api-key": "k", authorization: "Bearer b" }))).toBe("k");
    expect(presentedToken(new Headers())).toBeNull();
  });

  test("a null token disables auth", async () => {
    const h = makeApp({ config: { token: null } });
    expect((await postMessages(h, simpleBody(), { auth: false })).status).toBe(200);
  });
});

describe("host check (DNS rebinding)", () => {
  const withHost = (host: string) => new Request(`${BASE}/health`, { headers: { host } });

  test("loopback names pass, with or without a port", async () => {
    const h = makeApp();
    for (const host of ["localhost", "localhost:7777", "127.0.0.1:7777", "[::1]:7777", "[::1]", "LOCALHOST"])
      expect((await h.app.handle(withHost(host))).status).toBe(200);
  });

  test("other names get 403 permission_error, on every route", async () => {
    const h = makeApp();
    await expectError(await h.app.handle(withHost("evil.example:7777")), 403, "permission_error");
    await expectError(await h.app.handle(new Request("http://attacker.test/v1/models", { headers: { "x-api-key": TOKEN } })), 403, "permission_error");
  });

  test("configured names pass", async () => {
    const h = makeApp({ config: { allowedHosts: ["my-mac.local"] } });
    expect((await h.app.handle(withHost("my-mac.local:7777"))).status).toBe(200);
    expect((await h.app.handle(withHost("other.local"))).status).toBe(403);
  });
});

describe("one target for every guard and the router", () => {
  test("a malformed Host is 400 invalid_request_error, even with the token", async () => {
    const h = makeApp({ config: { allowedHosts: ["*"] } });
    for (const host of ["[::1]evil.example", "localhost:evil.example", "localhost, evil.example", "::1", "localhost:99999", "a@localhost"])
      await expectError(await h.app.handle(request("/v1/models", { headers: { host } })), 400, "invalid_request_error");
    await expectError(await postMessages(h, simpleBody(), { headers: { host: "[::1]evil.example", "x-api-key": TOKEN } }), 400, "invalid_request_error");
    expect(h.engine.requests).toHaveLength(0);
  });

  test("well-formed names that are not loopback stay 403, the FQDN form included", async () => {
    const h = makeApp();
    for (const host of ["localhost.", "[::2]", "0.0.0.0", "localhost.evil.example:7777"])
      await expectError(await h.app.handle(request("/v1/models", { headers: { host } })), 403, "permission_error");
  });

  test("a short configured host name reaches the route it names", async () => {
    const h = makeApp({ config: { allowedHosts: ["ab"] } });
    expect((await h.app.handle(new Request("http://ab/v1/models", { headers: { "x-api-key": TOKEN } }))).status).toBe(200);
    expect((await h.app.handle(new Request("http://ab/health"))).status).toBe(200);
  });
});

describe("/health without the token", () => {
  const fetchHealth = async (h: ReturnType<typeof makeApp>, headers: Record<string, string> = {}) =>
    (await h.app.handle(new Request(`${BASE}/health`, { headers }))).json();
  const memoryInfo = () => ({ source: "file:/private/memory-file", in_flight: 0 });

  test("shows the model's name, status and memory level, never paths, pids or the memory source", async () => {
    const h = makeApp({ deps: { memoryInfo } });
    const variants: Record<string, string>[] = [{}, { "x-api-key": "nope" }, { authorization: "Bearer nope" }];
    for (const headers of variants) {
      const body = await fetchHealth(h, headers);
      expect(body).toMatchObject({ status: "ok", ready: true, model: "tiny-demo", engine: { state: "ready" }, memory: { status: "safe" } });
      expect(body.engine).toEqual({ state: "ready" });
      expect(Object.keys(body.memory).sort()).toEqual(["available_gb", "status"]);
      expect(JSON.stringify(body)).not.toMatch(/tmp|private|4242|workerPid/);
    }
  });

  test("the token (x-api-key or Bearer) shows the details; so does disabled auth", async () => {
    for (const [h, headers] of [
      [makeApp({ deps: { memoryInfo } }), { "x-api-key": TOKEN }],
      [makeApp({ deps: { memoryInfo } }), { authorization: `Bearer ${TOKEN}` }],
      [makeApp({ config: { token: null }, deps: { memoryInfo } }), {}],
    ] as const) {
      const body = await fetchHealth(h, headers);
      expect(body.engine).toMatchObject({ state: "ready", workerPid: 4242, model: { path: "/tmp/tiny-demo" } });
      expect(body.memory).toMatchObject({ status: "safe", source: "file:/private/memory-file" });
    }
  });
});

describe("CORS", () => {
  test("no CORS headers by default", async () => {
    const h = makeApp();
    const res = await h.app.handle(request("/v1/models", { headers: { origin: "http://localhost:3000" } }));
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    const pre = await h.app.handle(request("/v1/messages", { method: "OPTIONS", headers: { origin: "http://localhost:3000" }, auth: false }));
    expect(pre.headers.get("access-control-allow-origin")).toBeNull();
  });

  test("configured origins get headers and a preflight answer", async () => {
    const h = makeApp({ config: { corsOrigins: ["http://localhost:3000"] } });
    const res = await h.app.handle(request("/v1/models", { headers: { origin: "http://localhost:3000" } }));
    expect(res.headers.get("access-control-allow-origin")).toBe("http://localhost:3000");
    const pre = await h.app.handle(
      request("/v1/messages", {
        method: "OPTIONS",
        auth: false,
        headers: { origin: "http://localhost:3000", "access-control-request-headers": "x-api-key, content-type" },
      }),
    );
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-headers")).toBe("x-api-key, content-type");
    const other = await h.app.handle(request("/v1/models", { headers: { origin: "http://evil.example" } }));
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("body limit", () => {
  test("over 32 MB by content-length -> 413 request_too_large, before reading", async () => {
    const h = makeApp();
    const big = "x".repeat(32 * 1024 * 1024 + 10);
    const res = await postMessages(h, undefined, { body: big, headers: { "content-type": "application/json" } });
    await expectError(res, 413, "request_too_large");
  });

  test("a chunked body without content-length is cut off at the limit", async () => {
    const h = makeApp({ config: { maxBodyBytes: 1024 } });
    const chunk = new TextEncoder().encode(`{"pad":"${"y".repeat(600)}`);
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(chunk);
        c.enqueue(chunk);
        c.close();
      },
    });
    const res = await h.app.handle(
      new Request(`${BASE}/v1/messages`, { method: "POST", body, headers: { "content-type": "application/json", "x-api-key": TOKEN } }),
    );
    expect(res.headers.get("content-length")).not.toBe("0");
    await expectError(res, 413, "request_too_large");
  });

  test("a body under the limit passes", async () => {
    const h = makeApp({ config: { maxBodyBytes: 4096 } });
    expect((await postMessages(h, simpleBody())).status).toBe(200);
  });
});
