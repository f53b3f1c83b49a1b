/**
 * RoutingEngine: one InferenceEngine in front of several, chosen per request by the alias
 * target in `req.model` (pattern rules from ./routes). E.g. haiku -> a small upstream, the
 * rest -> a large one; or haiku -> the local MLX engine, the rest -> a vLLM cluster.
 */
import type { EngineEvent, EngineState, EngineStats, GenerateRequest, InferenceEngine, ModelInfo, PromptInput } from "../engine/types";
import { pickRoute } from "./routes";
import type { TokenCount } from "./tokens";

/** One route: requests whose model matches `pattern` go to `engine`. */
export interface EngineRoute {
  pattern: string;
  engine: InferenceEngine;
}

/** What /health shows per route. */
export interface RouteStatus {
  pattern: string;
  state: EngineState;
  model: string | null;
  /** The route engine's own extra stats (e.g. `upstream` health), if any. */
  detail: Record<string, unknown>;
}

/** The default route's stats, queue figures summed over all routes, and each route's status. */
export interface RoutingEngineStats extends EngineStats {
  routes: RouteStatus[];
}

/** Dispatches each request to the engine its model routes to; model() and state() are the default route's. */
export class RoutingEngine implements InferenceEngine {
  private readonly fallback: EngineRoute;

  /** `routes` in priority order; the `*` route (or else the first) is the default. */
  constructor(private readonly routes: EngineRoute[]) {
    if (!routes.length) throw new Error("RoutingEngine needs at least one route");
    this.fallback = routes.find((r) => r.pattern === "*") ?? (routes[0] as EngineRoute);
  }

  /** The engine for a request: a rule naming the alias target wins, then one naming the client's
   *  own model name (so `haiku=...` works with the default alias map), then the default route. */
  engineFor(model: string | undefined, requested?: string): InferenceEngine {
    const specific = (name: string | undefined) => {
      const r = pickRoute(this.routes, name);
      return r && r.pattern !== "*" ? r : undefined;
    };
    return (specific(model) ?? specific(requested) ?? this.fallback).engine;
  }

  /** Starts every route; an upstream that is down does not stop the others. */
  async start(): Promise<ModelInfo> {
    const results = await Promise.allSettled(this.routes.map((r) => r.engine.start()));
    const i = this.routes.indexOf(this.fallback);
    const mine = results[i];
    if (mine?.status === "rejected") throw mine.reason;
    return (mine as PromiseFulfilledResult<ModelInfo>).value;
  }

  /** The default route's model: what /v1/models and the banner show. */
  model(): ModelInfo | null {
    return this.fallback.engine.model();
  }

  /** The default route's state; other routes' trouble shows in stats().routes and their own 503s. */
  state(): EngineState {
    return this.fallback.engine.state();
  }

  generate(req: GenerateRequest, signal?: AbortSignal): AsyncIterable<EngineEvent> {
    return this.engineFor(req.model, req.requestedModel).generate(req, signal);
  }

  countTokens(input: PromptInput): Promise<number> {
    return this.engineFor(input.model, input.requestedModel).countTokens(input);
  }

  /** Exact when the chosen engine counts with a real tokenizer; the MLX engine always does. */
  async countTokensDetailed(input: PromptInput): Promise<TokenCount> {
    const e = this.engineFor(input.model, input.requestedModel);
    if (e.countTokensDetailed) return (await e.countTokensDetailed(input)) as TokenCount;
    return { count: await e.countTokens(input), exact: true, source: "engine" };
  }

  async stats(): Promise<RoutingEngineStats> {
    const all = await Promise.all(this.routes.map((r) => r.engine.stats()));
    const base = all[this.routes.indexOf(this.fallback)] as EngineStats;
    const routes = this.routes.map((r, i) => {
      const s = all[i] as EngineStats & Record<string, unknown>;
      const { state, model, queued, running, mlx, workerRssGb, workerPid, restarts, ...detail } = s;
      return { pattern: r.pattern, state, model: model?.id ?? null, detail };
    });
    return {
      ...base,
      queued: all.reduce((n, s) => n + s.queued, 0),
      running: all.reduce((n, s) => n + s.running, 0),
      routes,
    };
  }

  async clearCache(): Promise<void> {
    await Promise.all(this.routes.map((r) => r.engine.clearCache()));
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.routes.map((r) => r.engine.stop()));
  }
}
