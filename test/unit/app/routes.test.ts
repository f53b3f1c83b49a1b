import { describe, expect, test } from "bun:test";
import { EngineOverloadedError } from "../../../src/engine/errors";
import { BASE, makeApp, postMessages, request, simpleBody, TOKEN } from "./harness";

async function errorOf(res: Response) {
  const body = await res.json();
  expect(body).toEqual({ type: "error", error: { type: expect.any(String), message: expect.any(String) }, request_id: expect.stringMatching(/^req_/) });
  return { status: res.status, type: body.error.type as string, message: body.error.message as string };
}

describe("validation -> 400 invalid_request_error", () => {
  const h = makeApp();
  const cases: Array<[string, unknown]> = [
    ["missing messages", { model: "m", max_tokens: 5 }],
    ["missing max_tokens", { model: "m", messages: [{ role: "user", content: "x" }] }],
    ["empty messages", { model: "m", max_tokens: 5, messages: [] }],
    ["negative max_tokens", simpleBody({ max_tokens: -1 })],
    ["fractional max_tokens", simpleBody({ max_tokens: 1.5 })],
    ["wrong role", simpleBody({ messages: [{ role: "tool", content: "x" }] })],
    ["content of the wrong type", simpleBody({ messages: [{ role: "user", content: 42 }] })],
    ["text block without text", simpleBody({ messages: [{ role: "user", content: [{ type: "text" }] }] })],
    ["tool_use without id", simpleBody({ messages: [{ role: "assistant", content: [{ type: "tool_use", name: "x", input: {} }] }] })],
    ["stream not a boolean", simpleBody({ stream: "yes" })],
    ["temperature out of range", simpleBody({ temperature: 5 })],
    ["system of the wrong type", simpleBody({ system: 12 })],
    ["a JSON array body", [1, 2]],
    ["unknown tool_result id", simpleBody({ messages: [{ role: "user", content: [{ type: "tool_result", tool_use_id: "x" }] }] })],
    ["an image", simpleBody({ messages: [{ role: "user", content: [{ type: "image", source: { type: "base64", data: "" } }] }] })],
  ];
  for (const [name, body] of cases) {
    test(name, async () => {
      const e = await errorOf(await postMessages(h, body));
      expect([e.status, e.type]).toEqual([400, "invalid_request_error"]);
    });
  }

  test("messages name the field", async () => {
    expect((await errorOf(await postMessages(h, { model: "m", max_tokens: 5 }))).message).toContain("messages");
    expect((await errorOf(await postMessages(h, simpleBody({ max_tokens: 0 })))).message).toContain("max_tokens");
  });

  test("malformed JSON, empty body, invalid UTF-8, deep nesting, wrong content type", async () => {
    const raw = (body: BodyInit, type = "application/json") =>
      h.app.handle(new Request(`${BASE}/v1/messages`, { method: "POST", body, headers: { "content-type": type, "x-api-key": TOKEN } }));
    for (const res of [
      await raw("{not json"),
      await raw(""),
      await raw(new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])),
      await raw("[".repeat(100_000) + "]".repeat(100_000)),
      await raw(JSON.stringify(simpleBody()), "text/plain"),
    ]) {
      const e = await errorOf(res);
      expect([e.status, e.type]).toEqual([400, "invalid_request_error"]);
    }
  });
});

describe("count_tokens", () => {
  test("exact count from the engine, over the same translation", async () => {
    const h = makeApp({ engine: { countTokens: () => 1234 } });
    const res = await h.app.handle(
      request("/v1/messages/count_tokens?beta=true", {
        method: "POST",
        json: { model: "claude-x", system: [{ type: "text", text: "x-anthropic-billing-header: a;" }, { type: "text", text: "S" }], messages: [{ role: "user", content: "hi" }], tools: [{ name: "T", input_schema: { type: "object" } }] },
      }),
    );
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ input_tokens: 1234 });
    expect(h.engine.counted[0]).toEqual({
      model: "tiny-demo",
      requestedModel: "claude-x",
      messages: [
        { role: "system", content: "S" },
        { role: "user", content: "hi" },
      ],
      tools: [{ type: "function", function: { name: "T", parameters: { type: "object" } } }],
    });
  });

  test("validation applies", async () => {
    const h = makeApp();
    const res = await h.app.handle(request("/v1/messages/count_tokens", { method: "POST", json: { model: "m" } }));
    expect(res.status).toBe(400);
  });
});

describe("models", () => {
  test("list: served model, a claude id and exact aliases, in Anthropic's shape", async () => {
    const h = makeApp({ config: { aliases: "claude-opus-5-5=default,*haiku*=default" } });
    const body = await (await h.app.handle(request("/v1/models"))).json();
    const ids = body.data.map((m: { id: string }) => m.id);
    expect(ids).toEqual(["tiny-demo", "claude-pensieve-local", "claude-opus-5-5"]);
    expect(body).toMatchObject({ has_more: false, first_id: "tiny-demo", last_id: "claude-opus-5-5" });
    for (const m of body.data) expect(m).toEqual({ type: "model", id: m.id, display_name: expect.any(String), created_at: expect.any(String) });
  });

  test("get: any name resolves and is echoed", async () => {
    const h = makeApp();
    for (const id of ["claude-pensieve-local", "claude-sonnet-4-5", "tiny-demo"]) {
      const res = await h.app.handle(request(`/v1/models/${id}`));
      expect(res.status).toBe(200);
      expect((await res.json()).id).toBe(id);
    }
  });
});

describe("health and probe", () => {
  test("GET /health with the token: status, model, uptime, engine state and stats, memory info", async () => {
    let now = 1_000_000;
    const h = makeApp({ deps: { clock: () => now, memoryInfo: () => ({ status: "safe", availableGb: 16 }) } });
    now += 5_000;
    const body = await (await h.app.handle(request("/health"))).json();
    expect(body).toMatchObject({
      status: "ok",
      ready: true,
      model: "tiny-demo",
      version: "0.0.0-test",
      uptime_s: 5,
      engine: { state: "ready", running: 0, workerPid: 4242 },
      memory: { status: "safe", availableGb: 16 },
    });
  });

  test("health reports a starting engine", async () => {
    const h = makeApp({ engine: { state: "starting" } });
    const body = await (await h.app.handle(request("/health", { auth: false }))).json();
    expect([body.status, body.ready]).toEqual(["starting", false]);
  });

  test("HEAD and GET /api/hello -> 200", async () => {
    const h = makeApp();
    expect((await h.app.handle(request("/api/hello", { method: "HEAD", auth: false }))).status).toBe(200);
    expect((await h.app.handle(request("/api/hello", { auth: false }))).status).toBe(200);
  });
});

describe("not found", () => {
  test("unknown routes -> 404 not_found_error", async () => {
    const h = makeApp();
    const e = await errorOf(await h.app.handle(request("/v1/nope")));
    expect([e.status, e.type]).toEqual([404, "not_found_error"]);
  });
});

describe("docs", () => {
  test("the OpenAPI document covers the routes and the request/response bodies", async () => {
    const h = makeApp();
    const doc = await (await h.app.handle(request("/swagger/json", { auth: false }))).json();
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(["/v1/messages", "/v1/messages/count_tokens", "/v1/models", "/v1/models/{id}", "/health"]));
    const post = doc.paths["/v1/messages"].post;
    expect(JSON.stringify(post.requestBody)).toContain("MessagesRequest");
    expect(Object.keys(post.responses)).toEqual(expect.arrayContaining(["200", "400", "401", "529"]));
    expect(Object.keys(doc.components.schemas)).toEqual(expect.arrayContaining(["MessagesRequest", "Message", "StreamEvent", "ErrorResponse"]));
  });
});

describe("memory headers on every response", () => {
  test("success, SSE, errors (400/401/403/404/413/529), health, probe, docs", async () => {
    const h = makeApp({ config: { maxBodyBytes: 2048 } });
    h.memory.set("caution", 2.5);
    const overloaded = makeApp({ engine: { script: [{ type: "throw", error: new EngineOverloadedError("busy", 2) }] } });
    overloaded.memory.set("caution", 2.5);
    const responses: Array<[string, Response]> = [
      ["json", await postMessages(h, simpleBody())],
      ["sse", await postMessages(h, simpleBody({ stream: true }))],
      ["400", await postMessages(h, { model: "m" })],
      ["401", await postMessages(h, simpleBody(), { auth: false })],
      ["403", await h.app.handle(new Request(`${BASE}/health`, { headers: { host: "evil.example" } }))],
      ["404", await h.app.handle(request("/v1/nothing"))],
      ["413", await postMessages(h, simpleBody({ pad: "z".repeat(4096) }))],
      ["529", await postMessages(overloaded, simpleBody())],
      ["health", await h.app.handle(request("/health", { auth: false }))],
      ["hello", await h.app.handle(request("/api/hello", { method: "HEAD", auth: false }))],
      ["swagger", await h.app.handle(request("/swagger", { auth: false }))],
      ["swagger json", await h.app.handle(request("/swagger/json", { auth: false }))],
      ["models", await h.app.handle(request("/v1/models"))],
    ];
    const seen = responses.map(([name, r]) => [name, r.headers.get("x-memory-status"), r.headers.get("x-available-memory-gb"), !!r.headers.get("request-id")]);
    expect(seen).toEqual(responses.map(([name]) => [name, "caution", "2.50", true]));
    expect(responses.map(([, r]) => r.status)).toEqual([200, 200, 400, 401, 403, 404, 413, 529, 200, 200, 200, 200, 200]);
  });
});
