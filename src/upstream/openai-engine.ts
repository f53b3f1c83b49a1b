/**
 * InferenceEngine backed by an OpenAI-compatible server (vLLM, SGLang, llama-server, Ollama,
 * LM Studio, mlx_lm.server). Streams POST /v1/chat/completions and turns chunks into EngineEvents.
 */
import { EngineBadRequestError, EngineError, PromptTooLongError } from "../engine/errors";
import type { EngineEvent, EngineState, EngineStats, GenerateRequest, InferenceEngine, ModelInfo, PromptInput } from "../engine/types";
import type { Logger } from "../log";
import { UpstreamUnavailableError, mapUpstreamStatus, parseContextComplaint } from "./errors";
import { type FetchLike, type StreamHandle, UpstreamHttp, upstreamRoot } from "./http";
import { SseDecoder } from "./sse";
import { ChunkAssembler, completionAsChunk, UpstreamStreamError } from "./stream";
import { type TokenCount, UpstreamTokenCounter } from "./tokens";
import { buildChatRequest } from "./translate";

/** Time limits for talking to an upstream. */
export interface UpstreamTimeouts {
  /** Until the upstream sends response headers (it may queue the request first). */
  headersMs: number;
  /** Longest silence between stream chunks; vLLM is silent during prompt processing. */
  idleMs: number;
  /** Probes and tokenize calls, whole request. */
  probeMs: number;
}

/** An upstream engine's tuning: src/config.ts upstreamDefaults and --upstream-context (upstreamTuning). */
export interface UpstreamTuning {
  timeouts: UpstreamTimeouts;
  /** While the upstream is unreachable, re-probe this often (ms; 0 = never). */
  reprobeIntervalMs: number;
  /** retry-after when an overloaded upstream gives no usable Retry-After. */
  retryAfterSeconds: number;
  /** Longest SSE line accepted; a longer one means a broken stream. */
  maxLineLength: number;
  /** Used when the upstream does not report its context window. */
  defaultContextLength: number;
}

/** @deprecated The server's one Logger (src/log.ts); kept for src/upstream/index.ts. */
export type UpstreamLogger = Logger;

/** Settings for one OpenAIUpstreamEngine. */
export interface OpenAIUpstreamOptions extends UpstreamTuning {
  /** e.g. http://127.0.0.1:8000/v1 (with or without /v1). */
  baseUrl: string;
  /** Sent as `Authorization: Bearer`. */
  apiKey?: string;
  /** Upstream model id; default: discovered from GET /v1/models. */
  model?: string;
  fetch?: FetchLike;
  logger?: Logger;
  /** Extra JSON merged into every chat request (e.g. {"repetition_penalty": 1.05}). */
  extraBody?: Record<string, unknown>;
}

/** What /health shows about one upstream server. */
export interface UpstreamHealth {
  url: string;
  /** null until the first contact. */
  reachable: boolean | null;
  model: string | null;
  lastError: string | null;
  lastErrorAt: string | null;
  lastOkAt: string | null;
  lastLatencyMs: number | null;
  /** How count_tokens is answered: "vllm", "llama-server", "estimate", or "probe" (not yet known). */
  tokenizer: string;
}

/** EngineStats plus the upstream's health (structurally an EngineStats). */
export interface UpstreamEngineStats extends EngineStats {
  upstream: UpstreamHealth[];
}

interface Upstream {
  http: UpstreamHttp;
  tokens: UpstreamTokenCounter;
  health: UpstreamHealth;
  /** Set once /v1/models answered: its model id (if it listed one) and context window. */
  discovered?: { id?: string; contextLength?: number };
}

const say = (m: string) => console.error(`[upstream] ${m}`);
const stderrLogger: Logger = { debug() {}, info: say, warn: say, error: say };

/** An InferenceEngine in front of one OpenAI-compatible server; RoutingEngine (./router) combines several. */
export class OpenAIUpstreamEngine implements InferenceEngine {
  private readonly timeouts: UpstreamTimeouts;
  private readonly log: Logger;
  private readonly primary: Upstream;
  private info: ModelInfo | null = null;
  private phase: "stopped" | "starting" | "started" = "stopped";
  private running = 0;
  private reprobeTimer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly opts: OpenAIUpstreamOptions) {
    this.timeouts = opts.timeouts;
    this.log = opts.logger ?? stderrLogger;
    this.primary = this.upstream(upstreamRoot(opts.baseUrl));
  }

  private upstream(root: string): Upstream {
    const http = new UpstreamHttp(root, this.opts.fetch ?? ((i, init) => fetch(i, init)), this.opts.apiKey);
    const post = async (path: string, body: unknown) =>
      (await http.call(path, { method: "POST", headers: http.headers({ "content-type": "application/json" }), body: JSON.stringify(body) }, this.timeouts.probeMs)).res;
    return {
      http,
      tokens: new UpstreamTokenCounter(post, (m) => this.log.warn(m)),
      health: { url: root, reachable: null, model: null, lastError: null, lastErrorAt: null, lastOkAt: null, lastLatencyMs: null, tokenizer: "probe" },
    };
  }

  /** Probe the upstream; never throws for an unreachable upstream (state() says "failed"). */
  async start(): Promise<ModelInfo> {
    this.phase = "starting";
    await this.probe(this.primary);
    this.phase = "started";
    const every = this.opts.reprobeIntervalMs;
    if (every > 0 && !this.reprobeTimer) {
      this.reprobeTimer = setInterval(() => {
        const u = this.primary;
        if (u.health.reachable !== true || !u.discovered) void this.probe(u);
      }, every);
      this.reprobeTimer.unref?.();
    }
    return this.model() as ModelInfo;
  }

  model(): ModelInfo | null {
    return this.info;
  }

  state(): EngineState {
    if (this.phase !== "started") return this.phase;
    return this.primary.health.reachable === false ? "failed" : "ready";
  }

  /** GET /v1/models: learn the model id and context window; update health. */
  private async probe(u: Upstream): Promise<void> {
    try {
      const { res, latencyMs } = await u.http.call("/v1/models", { headers: u.http.headers() }, this.timeouts.probeMs);
      if (!res.ok) throw this.statusError(res.status, res.headers, await res.text(), u.http.root);
      this.markOk(u, latencyMs);
      const list = ((await res.json().catch(() => ({}))) as { data?: ModelEntry[] }).data ?? [];
      const wanted = u === this.primary ? this.opts.model : undefined;
      // Guessing among several is unsafe: mlx_lm.server lists every cached HF model and would
      // load whichever we name. Without a choice, send no model id: the server uses its own.
      const entry = wanted ? list.find((m) => m.id === wanted) : list.length === 1 ? list[0] : undefined;
      if (!wanted && list.length > 1) {
        const ids = list.slice(0, 5).map((m) => m.id).join(", ");
        this.log.warn(`${u.http.root} lists ${list.length} models (${ids}); sending none so it uses its default. Pick one with --upstream URL#MODEL`);
      }
      // mlx_lm.server answers 200 with an empty body when the HF cache dir is missing: no id then.
      u.discovered = entry?.id ? { id: entry.id, contextLength: await this.contextLength(u, entry) } : {};
    } catch (e) {
      this.markFailed(u, e);
      if (u === this.primary && this.phase === "starting") {
        this.log.warn(`upstream not reachable at start (${errorText(e)}); serving 503 until it is`);
      }
    }
    if (u === this.primary) this.refreshInfo();
  }

  private async contextLength(u: Upstream, m: ModelEntry): Promise<number | undefined> {
    // vLLM and SGLang report max_model_len; some proxies say context_length.
    const direct = m.max_model_len ?? m.context_length;
    if (typeof direct === "number") return direct;
    if (m.owned_by !== "llamacpp" && !m.meta) return undefined;
    // llama-server: the runtime window is in /props, not /v1/models (n_ctx_train is the training one).
    try {
      const { res } = await u.http.call("/props", { headers: u.http.headers() }, this.timeouts.probeMs);
      const p = (await res.json()) as { default_generation_settings?: { n_ctx?: number }; n_ctx?: number };
      return p.default_generation_settings?.n_ctx ?? p.n_ctx ?? m.meta?.n_ctx_train;
    } catch {
      return m.meta?.n_ctx_train;
    }
  }

  private refreshInfo(): void {
    const d = this.primary.discovered;
    const id = this.opts.model ?? d?.id ?? `upstream-${new URL(this.primary.http.root).host}`;
    this.primary.health.model = id;
    this.info = {
      id,
      path: this.primary.http.root,
      contextLength: d?.contextLength ?? this.opts.defaultContextLength,
      isDemo: false,
      supportsVision: false,
      // The upstream owns its KV cache; nothing to admit against locally.
      kvBytesPerToken: 0,
    };
  }

  private markOk(u: Upstream, latencyMs: number): void {
    if (u.health.reachable === false) this.log.info(`upstream ${u.http.root} is reachable again`);
    u.health.reachable = true;
    u.health.lastOkAt = new Date().toISOString();
    u.health.lastLatencyMs = Math.round(latencyMs);
  }

  private markFailed(u: Upstream, e: unknown): void {
    // A client's bad request says nothing about the upstream's health.
    if (e instanceof EngineBadRequestError || e instanceof PromptTooLongError) return;
    if (e instanceof UpstreamUnavailableError) u.health.reachable = false;
    u.health.lastError = errorText(e);
    u.health.lastErrorAt = new Date().toISOString();
  }

  /** The upstream and the model id it is asked for. */
  private target(): { u: Upstream; model: string | undefined } {
    return { u: this.primary, model: this.opts.model ?? this.primary.discovered?.id };
  }

  /** The model id to send; undefined (field omitted) when the upstream would not say. */
  private async modelFor(t: { u: Upstream; model: string | undefined }): Promise<string | undefined> {
    if (t.model) return t.model;
    if (!t.u.discovered) await this.probe(t.u);
    return t.u.discovered?.id;
  }

  async *generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<EngineEvent> {
    const t = this.target();
    const model = await this.modelFor(t);
    const body = buildChatRequest(req, model, this.opts.extraBody);
    const open = () =>
      t.u.http.stream(
        "/v1/chat/completions",
        {
          method: "POST",
          headers: t.u.http.headers({ "content-type": "application/json", accept: "text/event-stream", "x-request-id": req.requestId }),
          body: JSON.stringify(body),
        },
        this.timeouts,
        signal,
      );
    let h: StreamHandle;
    try {
      h = await open();
      this.markOk(t.u, h.latencyMs);
      if (h.res.status === 400) {
        // A max_tokens larger than the context can hold is clamped and retried once, not refused.
        const text = await h.res.text();
        h.close();
        const c = parseContextComplaint(text);
        const room = c.maxContext !== undefined && c.promptTokens !== undefined ? c.maxContext - c.promptTokens : 0;
        if (c.isContextError && room > 0 && room < body.max_tokens) {
          this.log.info(`request ${req.requestId}: clamping max_tokens ${body.max_tokens} -> ${room} for the upstream's context`);
          body.max_tokens = room;
          h = await open();
        } else {
          throw this.statusError(400, h.res.headers, text, t.u.http.root);
        }
      }
    } catch (e) {
      if (signal?.aborted && !(e instanceof EngineError)) return;
      this.markFailed(t.u, e);
      throw e;
    }
    if (!h.res.ok) {
      const text = await h.res.text().catch(() => "");
      h.close();
      const err = this.statusError(h.res.status, h.res.headers, text, t.u.http.root);
      this.markFailed(t.u, err);
      throw err;
    }

    this.running++;
    const decoder = sseDecoderFor(t.u.http.root, this.opts.maxLineLength);
    const asm = new ChunkAssembler(req.stop ?? []);
    // A server (or proxy) that ignores stream:true answers one JSON completion instead.
    const whole = (h.res.headers.get("content-type") ?? "").includes("application/json");
    try {
      yield { type: "started", promptTokens: 0, cachedTokens: 0 };
      if (whole) {
        for (const ev of asm.push(completionAsChunk(await h.res.text()))) yield ev;
      } else {
        for (;;) {
          const bytes = await h.read();
          const items = bytes ? decoder.push(bytes) : decoder.end();
          for (const item of items) for (const ev of asm.push(item)) yield ev;
          if (!bytes || asm.done) break;
        }
      }
      if (!asm.done && !asm.finished) {
        throw new UpstreamUnavailableError(`upstream ${t.u.http.root} closed the stream before finishing`, "stream_broken", t.u.http.root);
      }
      yield* asm.finishEvents();
    } catch (e) {
      if (signal?.aborted && !(e instanceof EngineError)) {
        yield { type: "done", finishReason: "cancelled", promptTokens: 0, completionTokens: 0, cachedTokens: 0 };
        return;
      }
      const err = e instanceof UpstreamStreamError ? this.statusError(e.status, new Headers(), e.detail, t.u.http.root) : e;
      this.markFailed(t.u, err);
      throw err;
    } finally {
      this.running--;
      h.close();
    }
  }

  async countTokens(input: PromptInput): Promise<number> {
    return (await this.countTokensDetailed(input)).count;
  }

  /** Count with provenance: `exact` is false when the upstream has no tokenizer endpoint. */
  async countTokensDetailed(input: PromptInput): Promise<TokenCount> {
    const t = this.target();
    const model = await this.modelFor(t).catch(() => undefined);
    const r = await t.u.tokens.count(input, model);
    t.u.health.tokenizer = t.u.tokens.method();
    return r;
  }

  /** Health of the upstream this engine talks to (a list, as RoutingEngine's /health shows them). */
  health(): UpstreamHealth[] {
    const u = this.primary;
    u.health.tokenizer = u.tokens.method();
    return [{ ...u.health }];
  }

  async stats(): Promise<UpstreamEngineStats> {
    return {
      state: this.state(),
      model: this.info,
      queued: 0,
      running: this.running,
      mlx: null,
      workerRssGb: null,
      workerPid: null,
      restarts: 0,
      upstream: this.health(),
    };
  }

  /** The upstream manages its own prefix cache. */
  async clearCache(): Promise<void> {}

  // A non-2xx answer as a typed engine error, with this engine's fallback retry hint.
  private statusError(status: number, headers: Headers, body: string, root: string): EngineError {
    return mapUpstreamStatus(status, headers, body, root, this.opts.retryAfterSeconds);
  }

  async stop(): Promise<void> {
    if (this.reprobeTimer) clearInterval(this.reprobeTimer);
    this.reprobeTimer = undefined;
    this.phase = "stopped";
  }
}

interface ModelEntry {
  id: string;
  owned_by?: string;
  max_model_len?: number;
  context_length?: number;
  meta?: { n_ctx_train?: number };
}

const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

// A line past the cap is no chunk any server sends: the stream is broken.
function sseDecoderFor(root: string, maxLineLength: number): SseDecoder {
  return new SseDecoder({
    maxLineLength,
    onOverflow: (o) => {
      throw new UpstreamUnavailableError(`upstream ${root} sent an SSE line over ${o.length} characters`, "stream_broken", root);
    },
  });
}
