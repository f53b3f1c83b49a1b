/**
 * The OpenAI-compatible upstream backend, assembled from CLI/env settings:
 * `pensieve serve --backend openai --upstream URL[#MODEL] [--upstream-key KEY] [--upstream-routes SPEC]`.
 */
import { type ServeConfig, upstreamDefaults } from "../config";
import type { InferenceEngine } from "../engine/types";
import type { FetchLike } from "./http";
import { OpenAIUpstreamEngine, type OpenAIUpstreamOptions, type UpstreamLogger, type UpstreamTuning } from "./openai-engine";
import { RoutingEngine } from "./router";
import { parseRouteSpec } from "./routes";

export { OpenAIUpstreamEngine } from "./openai-engine";
export type { OpenAIUpstreamOptions, UpstreamEngineStats, UpstreamHealth, UpstreamTuning } from "./openai-engine";
export { RoutingEngine } from "./router";
export { UpstreamUnavailableError, UpstreamServerError } from "./errors";
export type { TokenCount } from "./tokens";
export { upstreamMetrics, type MetricsReader } from "./kv-pressure";

/** Settings as the CLI gathers them (flags win over PENSIEVE_UPSTREAM* variables), with the tuning of upstreamTuning. */
export interface UpstreamConfig extends UpstreamTuning {
  /**
   * `--upstream` / PENSIEVE_UPSTREAM: "http://host:8000/v1", optionally "#model-id". Optional
   * only when every route names its URL and one of them is `*`.
   */
  upstream?: string;
  /** `--upstream-key` / PENSIEVE_UPSTREAM_KEY. */
  apiKey?: string;
  /** `--upstream-routes` / PENSIEVE_UPSTREAM_ROUTES; see ./routes for the syntax. */
  routes?: string;
  logger?: UpstreamLogger;
  fetch?: FetchLike;
}

/** The upstream tuning of a serve configuration: src/config.ts upstreamDefaults and --upstream-context. */
export function upstreamTuning(cfg: Pick<ServeConfig, "upstreamContext">): UpstreamTuning {
  return { ...upstreamDefaults, defaultContextLength: cfg.upstreamContext };
}

/** Split "URL#model" into its parts. */
export function splitUpstream(spec: string): { baseUrl: string; model?: string } {
  const hash = spec.indexOf("#");
  if (hash < 0) return { baseUrl: spec.trim() };
  const model = spec.slice(hash + 1).trim();
  return { baseUrl: spec.slice(0, hash).trim(), ...(model ? { model } : {}) };
}

/** The engine for `--backend openai`: one upstream, or a RoutingEngine when routes are given. */
export function createUpstreamEngine(cfg: UpstreamConfig): InferenceEngine {
  const main = cfg.upstream?.trim() ? splitUpstream(cfg.upstream) : undefined;
  const common: Omit<OpenAIUpstreamOptions, "baseUrl"> = {
    timeouts: cfg.timeouts,
    reprobeIntervalMs: cfg.reprobeIntervalMs,
    retryAfterSeconds: cfg.retryAfterSeconds,
    maxLineLength: cfg.maxLineLength,
    defaultContextLength: cfg.defaultContextLength,
    ...(cfg.apiKey ? { apiKey: cfg.apiKey } : {}),
    ...(cfg.logger ? { logger: cfg.logger } : {}),
    ...(cfg.fetch ? { fetch: cfg.fetch } : {}),
  };
  const make = (baseUrl: string, model: string | undefined) =>
    new OpenAIUpstreamEngine({ ...common, baseUrl, ...(model ? { model } : {}) });
  const rules = cfg.routes ? parseRouteSpec(cfg.routes) : [];
  if (!rules.length) {
    if (!main) throw new Error("--backend openai needs --upstream URL (or --upstream-routes with a * rule)");
    return make(main.baseUrl, main.model);
  }
  const mainUrl = (pattern: string): string => {
    if (main) return main.baseUrl;
    throw new Error(`upstream route "${pattern}" names no URL and there is no --upstream to fall back on`);
  };

  // One engine per distinct (URL, model); rules sharing a target share its engine.
  const engines = new Map<string, OpenAIUpstreamEngine>();
  const engineFor = (baseUrl: string, model: string | undefined) => {
    const key = `${baseUrl}#${model ?? ""}`;
    let e = engines.get(key);
    if (!e) engines.set(key, (e = make(baseUrl, model)));
    return e;
  };
  const routes = rules.map((r) => ({
    pattern: r.pattern,
    // A rule with only a URL serves that server's own model; with only #MODEL, the main server.
    engine: engineFor(r.baseUrl ?? mainUrl(r.pattern), r.model ?? (r.baseUrl ? undefined : main?.model)),
  }));
  if (!rules.some((r) => r.pattern === "*")) {
    routes.push({ pattern: "*", engine: engineFor(mainUrl("*"), main?.model) });
  }
  return new RoutingEngine(routes);
}
