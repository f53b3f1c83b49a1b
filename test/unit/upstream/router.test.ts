import { describe, expect, test } from "bun:test";
import type {
  EngineEvent,
  EngineState,
  EngineStats,
  GenerateRequest,
  InferenceEngine,
  ModelInfo,
  PromptInput,
} from "../../../src/engine/types";
import { serveDefaults } from "../../../src/config";
import { createUpstreamEngine, splitUpstream, upstreamTuning } from "../../../src/upstream/index";
import { OpenAIUpstreamEngine } from "../../../src/upstream/openai-engine";
import { RoutingEngine } from "../../../src/upstream/router";
import { patternMatches } from "../../../src/engine/patterns";
import { parseRouteSpec, pickRoute } from "../../../src/upstream/routes";
import { collect, fakeUpstream, fixture, json, streamResponse } from "./fake-upstream";

const TUNING = upstreamTuning(serveDefaults());

/** A minimal engine that records what it was asked and answers with its name. */
class NamedEngine implements InferenceEngine {
  seen: string[] = [];
  started = false;
  stopped = false;
  constructor(
    readonly name: string,
    private st: EngineState = "ready",
    private readonly failStart = false,
  ) {}
  async start(): Promise<ModelInfo> {
    this.started = true;
    if (this.failStart) throw new Error(`${this.name} cannot start`);
    return this.model();
  }
  model(): ModelInfo {
    return { id: this.name, path: this.name, contextLength: 1000, isDemo: false, supportsVision: false, kvBytesPerToken: 0 };
  }
  state(): EngineState {
    return this.st;
  }
  async *generate(req: GenerateRequest): AsyncGenerator<EngineEvent> {
    this.seen.push(req.model ?? "");
    yield { type: "started", promptTokens: 1, cachedTokens: 0 };
    yield { type: "text", text: this.name };
    yield { type: "done", finishReason: "stop", promptTokens: 1, completionTokens: 1, cachedTokens: 0 };
  }
  async countTokens(input: PromptInput): Promise<number> {
    this.seen.push(`count:${input.model ?? ""}`);
    return this.name.length;
  }
  async stats(): Promise<EngineStats & { extra: string }> {
    return { state: this.st, model: this.model(), queued: 1, running: 2, mlx: null, workerRssGb: null, workerPid: null, restarts: 0, extra: this.name };
  }
  async clearCache(): Promise<void> {}
  async stop(): Promise<void> {
    this.stopped = true;
  }
}

describe("route spec", () => {
  test("parses URL#MODEL rules, URL-only and #MODEL-only targets", () => {
    expect(parseRouteSpec(" haiku=http://h:8001/v1#Qwen/Qwen3-4B , *=http://h:8000/v1#big, opus=#huge, sonnet=http://h3:9000 ")).toEqual([
      { pattern: "haiku", baseUrl: "http://h:8001/v1", model: "Qwen/Qwen3-4B" },
      { pattern: "*", baseUrl: "http://h:8000/v1", model: "big" },
      { pattern: "opus", model: "huge" },
      { pattern: "sonnet", baseUrl: "http://h3:9000" },
    ]);
    expect(parseRouteSpec("")).toEqual([]);
  });

  test("rejects malformed rules with a readable message", () => {
    expect(() => parseRouteSpec("haiku")).toThrow("expected PATTERN=URL#MODEL");
    expect(() => parseRouteSpec("haiku=")).toThrow("give a URL, a #MODEL, or both");
    expect(() => parseRouteSpec("haiku=not a url#m")).toThrow("is not a URL");
    expect(() => parseRouteSpec("haiku=ftp://h/#m")).toThrow("only http and https");
    expect(() => parseRouteSpec("a=#x,A=#y")).toThrow("appears twice");
  });

  test("patterns: substring without *, glob with *, case-insensitive; the catch-all goes last", () => {
    expect(patternMatches("haiku", "claude-3-5-HAIKU-20241022")).toBe(true);
    expect(patternMatches("claude-opus-4-*", "claude-opus-4-1-20250805")).toBe(true);
    expect(patternMatches("claude-opus-4-*", "claude-opus-3")).toBe(false);
    expect(patternMatches("claude-*-4-5", "claude-sonnet-4-5")).toBe(true);
    expect(patternMatches("a.b", "axb")).toBe(false);
    const rules = [{ pattern: "*" }, { pattern: "haiku" }, { pattern: "opus" }];
    expect(pickRoute(rules, "claude-haiku-4-5")?.pattern).toBe("haiku");
    expect(pickRoute(rules, "claude-sonnet-4-5")?.pattern).toBe("*");
    expect(pickRoute(rules, undefined)?.pattern).toBe("*");
    expect(pickRoute([{ pattern: "haiku" }], "claude-sonnet-4-5")).toBeUndefined();
  });

  test("splitUpstream reads URL#MODEL", () => {
    expect(splitUpstream("http://h:8000/v1#Qwen/Qwen3-8B")).toEqual({ baseUrl: "http://h:8000/v1", model: "Qwen/Qwen3-8B" });
    expect(splitUpstream("http://h:8000/v1")).toEqual({ baseUrl: "http://h:8000/v1" });
  });
});

describe("RoutingEngine", () => {
  test("routes generate and countTokens by req.model; the * route is the default", async () => {
    const small = new NamedEngine("small");
    const big = new NamedEngine("big");
    const router = new RoutingEngine([
      { pattern: "*", engine: big },
      { pattern: "haiku", engine: small },
    ]);
    const a = await collect(router.generate({ requestId: "1", model: "claude-haiku-4-5", messages: [], maxTokens: 5 }));
    const b = await collect(router.generate({ requestId: "2", model: "claude-sonnet-4-5", messages: [], maxTokens: 5 }));
    expect(a.events[1]).toEqual({ type: "text", text: "small" });
    expect(b.events[1]).toEqual({ type: "text", text: "big" });
    expect(await router.countTokens({ model: "claude-haiku-4-5", messages: [] })).toBe(5);
    expect(await router.countTokensDetailed({ model: "x", messages: [] })).toEqual({ count: 3, exact: true, source: "engine" });
    expect(small.seen).toEqual(["claude-haiku-4-5", "count:claude-haiku-4-5"]);
    expect(router.model()?.id).toBe("big");
  });

  test("start() survives a failing non-default route; stats show every route; stop() stops all", async () => {
    const small = new NamedEngine("small", "failed", true);
    const big = new NamedEngine("big");
    const router = new RoutingEngine([
      { pattern: "haiku", engine: small },
      { pattern: "*", engine: big },
    ]);
    expect((await router.start()).id).toBe("big");
    expect(small.started && big.started).toBe(true);
    expect(router.state()).toBe("ready");
    const stats = await router.stats();
    expect(stats).toMatchObject({ state: "ready", queued: 2, running: 4 });
    expect(stats.routes).toEqual([
      { pattern: "haiku", state: "failed", model: "small", detail: { extra: "small" } },
      { pattern: "*", state: "ready", model: "big", detail: { extra: "big" } },
    ]);
    await router.stop();
    expect(small.stopped && big.stopped).toBe(true);
  });

  test("start() fails when the default route fails", async () => {
    const router = new RoutingEngine([{ pattern: "*", engine: new NamedEngine("big", "failed", true) }]);
    await expect(router.start()).rejects.toThrow("big cannot start");
  });
});

describe("createUpstreamEngine", () => {
  test("no routes: a single OpenAIUpstreamEngine with the URL's #model", () => {
    const e = createUpstreamEngine({ ...TUNING, upstream: "http://h:8000/v1#m" });
    expect(e).toBeInstanceOf(OpenAIUpstreamEngine);
  });

  test("routes: one engine per target, * defaulting to --upstream, each talking to its own server", async () => {
    const up = fakeUpstream((r, signal) =>
      r.path === "/v1/models" ? json({ data: [{ id: `${new URL(r.url).host}-served` }] }) : streamResponse([fixture("vllm-text.sse")], signal),
    );
    const e = createUpstreamEngine({
      ...TUNING,
      upstream: "http://big:8000/v1#big-model",
      apiKey: "k",
      routes: "haiku=http://small:8001/v1,opus=#huge",
      fetch: up.fetch,
      logger: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
      timeouts: { ...TUNING.timeouts, probeMs: 1000 },
    });
    expect(e).toBeInstanceOf(RoutingEngine);
    for (const model of ["claude-haiku-4-5", "claude-opus-4-1", "claude-sonnet-4-5"]) {
      await collect(e.generate({ requestId: model, model, messages: [{ role: "user", content: "x" }], maxTokens: 4 }));
    }
    const chats = up.requests.filter((r) => r.path === "/v1/chat/completions");
    expect(chats.map((c) => [new URL(c.url).host, c.body.model])).toEqual([
      ["small:8001", "small:8001-served"],
      ["big:8000", "huge"],
      ["big:8000", "big-model"],
    ]);
    expect(chats.every((c) => c.headers.get("authorization") === "Bearer k")).toBe(true);
    await e.stop();
  });

  test("a bad spec fails at startup, not at the first request", () => {
    expect(() => createUpstreamEngine({ ...TUNING, upstream: "http://h:8000", routes: "haiku" })).toThrow("PATTERN=URL#MODEL");
    expect(() => createUpstreamEngine({ ...TUNING, upstream: "localhost:8000" })).toThrow("must be http or https");
    expect(() => createUpstreamEngine({ ...TUNING })).toThrow("needs --upstream URL");
    expect(() => createUpstreamEngine({ ...TUNING, routes: "haiku=#small,*=http://h:8000#big" })).toThrow('route "haiku" names no URL');
    expect(() => createUpstreamEngine({ ...TUNING, routes: "haiku=http://h:8001" })).toThrow('route "*" names no URL');
    expect(createUpstreamEngine({ ...TUNING, routes: "haiku=http://h:8001,*=http://h:8000#big" })).toBeInstanceOf(RoutingEngine);
  });
});
