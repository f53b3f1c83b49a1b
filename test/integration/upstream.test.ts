/**
 * OpenAIUpstreamEngine against a REAL OpenAI-compatible server: mlx_lm.server from the
 * installed mlx-lm, serving the tiny model on a free loopback port. Also a stand-in that
 * answers 429/503. Every process started here is stopped by its pid.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, realpathSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EngineOverloadedError } from "../../src/engine/errors";
import type { EngineEvent, GenerateRequest } from "../../src/engine/types";
import { UpstreamUnavailableError } from "../../src/upstream/errors";
import { OpenAIUpstreamEngine } from "../../src/upstream/openai-engine";
import { testPython, tinyModelDir } from "../support/server-process";
import { serveDefaults } from "../../src/config";
import { upstreamTuning } from "../../src/upstream/index";

const silent = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

/** A port nobody listens on right now: bind port 0, read it, release it. */
async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

interface MlxServer {
  url: string;
  proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  output(): string;
  stop(): Promise<void>;
}

async function startMlxServer(modelDir: string, hfHome: string): Promise<MlxServer> {
  const port = await freePort();
  const proc = Bun.spawn(
    [testPython(), "-m", "mlx_lm.server", "--model", modelDir, "--host", "127.0.0.1", "--port", String(port)],
    {
      // An empty HF cache of our own: mlx_lm.server's /v1/models scans it (and fails when it is missing).
      env: { ...process.env, HF_HOME: hfHome, HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  let out = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    const reader = s.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out += dec.decode(value, { stream: true });
    }
  };
  void pump(proc.stdout);
  void pump(proc.stderr);
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill("SIGTERM");
    const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await proc.exited;
    clearTimeout(t);
  };
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`mlx_lm.server exited early (${proc.exitCode}):\n${out}`);
    try {
      if ((await fetch(`${url}/health`)).ok) return { url, proc, output: () => out, stop };
    } catch {
      // not listening yet
    }
    await Bun.sleep(200);
  }
  await stop();
  throw new Error(`mlx_lm.server did not become healthy in time:\n${out}`);
}

const req = (over: Partial<GenerateRequest> = {}): GenerateRequest => ({
  requestId: `req_${crypto.randomUUID()}`,
  messages: [
    { role: "system", content: "You are terse." },
    { role: "user", content: "Say hello" },
  ],
  maxTokens: 6,
  temperature: 0,
  ...over,
});

async function run(engine: OpenAIUpstreamEngine, r: GenerateRequest, signal?: AbortSignal) {
  const events: EngineEvent[] = [];
  try {
    for await (const ev of engine.generate(r, signal)) events.push(ev);
    return { events };
  } catch (error) {
    return { events, error };
  }
}

describe("OpenAIUpstreamEngine against mlx_lm.server", () => {
  let server: MlxServer;
  let modelDir: string;
  let hfHome: string;
  let engine: OpenAIUpstreamEngine;

  beforeAll(async () => {
    modelDir = realpathSync(await tinyModelDir());
    hfHome = mkdtempSync(join(tmpdir(), "pensieve-hf-"));
    mkdirSync(join(hfHome, "hub"), { recursive: true });
    server = await startMlxServer(modelDir, hfHome);
    engine = new OpenAIUpstreamEngine({ ...upstreamTuning(serveDefaults()), baseUrl: `${server.url}/v1`, logger: silent, reprobeIntervalMs: 0, defaultContextLength: 2048 });
  });

  afterAll(async () => {
    await engine?.stop();
    await server?.stop();
    if (hfHome) rmSync(hfHome, { recursive: true, force: true });
  });

  test("start() discovers the served model from /v1/models", async () => {
    const info = await engine.start();
    expect(engine.state()).toBe("ready");
    expect(info.id).toBe(modelDir);
    expect(info.contextLength).toBe(2048);
    expect((await engine.stats()).upstream[0]).toMatchObject({ reachable: true, lastError: null });
  });

  test("streams text in order and stops on max_tokens with usage carried over", async () => {
    const { events, error } = await run(engine, req({ maxTokens: 5 }));
    expect(error).toBeUndefined();
    const types = events.map((e) => e.type);
    expect(types[0]).toBe("started");
    expect(types.at(-1)).toBe("done");
    // started, then prompt progress, then output; never output before progress ends.
    const firstOutput = types.findIndex((t) => t === "text" || t === "thinking" || t === "tool_call");
    const lastProgress = types.lastIndexOf("progress");
    expect(lastProgress).toBeLessThan(firstOutput === -1 ? Infinity : firstOutput);
    const done = events.at(-1) as Extract<EngineEvent, { type: "done" }>;
    expect(done.finishReason).toBe("length");
    expect(done.completionTokens).toBe(5);
    expect(done.promptTokens).toBeGreaterThan(5);
    expect(done.cachedTokens).toBeGreaterThanOrEqual(0);
  });

  test("tool history, tools and tool results go through the server's chat template", async () => {
    const { events, error } = await run(
      engine,
      req({
        messages: [
          { role: "user", content: "Weather in Paris?" },
          { role: "assistant", content: "", tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: { city: "Paris" } } }] },
          { role: "tool", tool_call_id: "call_1", content: "18C, clear" },
        ],
        tools: [
          {
            type: "function",
            function: { name: "get_weather", description: "Weather for a city", parameters: { type: "object", properties: { city: { type: "string" } } } },
          },
        ],
        maxTokens: 3,
      }),
    );
    expect(error).toBeUndefined();
    expect(events.at(-1)).toMatchObject({ type: "done", finishReason: "length", completionTokens: 3 });
  });

  test("a client that leaves cancels the upstream request; the server keeps serving", async () => {
    const ctl = new AbortController();
    const seen: string[] = [];
    for await (const ev of engine.generate(req({ maxTokens: 200 }), ctl.signal)) {
      seen.push(ev.type === "done" ? `done:${ev.finishReason}` : ev.type);
      if (ev.type === "text") ctl.abort();
    }
    expect(seen[0]).toBe("started");
    expect(seen.at(-1)).toBe("done:cancelled");
    expect(seen.filter((s) => s === "text").length).toBeLessThan(200);
    const next = await run(engine, req({ maxTokens: 2 }));
    expect(next.events.at(-1)).toMatchObject({ type: "done", finishReason: "length" });
  });

  test("count_tokens: mlx_lm.server has no tokenizer endpoint, so the count is a labelled estimate", async () => {
    const r = await engine.countTokensDetailed({ messages: [{ role: "user", content: "Say hello to the world" }] });
    expect(r.exact).toBe(false);
    expect(r.source).toBe("estimate");
    expect(r.count).toBeGreaterThan(0);
  });

  test("upstream stopped -> UpstreamUnavailableError, state failed, /health shows it", async () => {
    await server.stop();
    const { events, error } = await run(engine, req());
    expect(events).toEqual([]);
    expect(error).toBeInstanceOf(UpstreamUnavailableError);
    expect((error as UpstreamUnavailableError).failure).toBe("unreachable");
    expect(engine.state()).toBe("failed");
    const h = (await engine.stats()).upstream[0];
    expect(h?.reachable).toBe(false);
    expect(h?.lastError).toContain("cannot reach upstream");
  });
});

describe("OpenAIUpstreamEngine against an overloaded stand-in", () => {
  let standin: ReturnType<typeof Bun.serve>;
  let status = 429;

  beforeAll(() => {
    standin = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(r) {
        if (new URL(r.url).pathname === "/v1/models") return Response.json({ object: "list", data: [{ id: "busy-model", max_model_len: 8192 }] });
        return Response.json(
          { error: { message: "Too many requests, slow down", type: "rate_limit_error" } },
          { status, headers: status === 429 ? { "retry-after": "7" } : {} },
        );
      },
    });
  });

  afterAll(() => standin?.stop(true));

  test("429 -> EngineOverloadedError with the upstream's retry-after; 503 -> default retry", async () => {
    const engine = new OpenAIUpstreamEngine({ ...upstreamTuning(serveDefaults()), baseUrl: `http://127.0.0.1:${standin.port}/v1`, logger: silent, reprobeIntervalMs: 0 });
    expect(await engine.start()).toMatchObject({ id: "busy-model", contextLength: 8192 });
    const a = await run(engine, req());
    expect(a.events).toEqual([]);
    expect(a.error).toBeInstanceOf(EngineOverloadedError);
    expect((a.error as EngineOverloadedError).retryAfterSeconds).toBe(7);
    status = 503;
    const b = await run(engine, req());
    expect(b.error).toBeInstanceOf(EngineOverloadedError);
    expect((b.error as EngineOverloadedError).retryAfterSeconds).toBe(5);
    // Overloaded is still reachable: the engine stays ready.
    expect(engine.state()).toBe("ready");
    await engine.stop();
  });
});
