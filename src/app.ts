/**
 * createApp: composes the whole HTTP layer around an engine and a memory monitor.
 * It never listens; src/main.ts (or a test via app.handle) does.
 */
import { Elysia, sse } from "elysia";
import { type AliasRule, parseAliases } from "./anthropic/aliases";
import { mapError, newRequestId } from "./anthropic/errors";
import { ADMISSION_HINT, messagesKvDemand } from "./anthropic/estimate";
import { ANTHROPIC_REQUEST_HEADERS } from "./anthropic/headers";
import { anthropicRoutes, type StreamTiming } from "./anthropic/routes";
import { httpDefaults, type ServeConfig, streamDefaults } from "./config";
import { errorEvent } from "./anthropic/stream";
import { docsPlugin } from "./docs/plugin";
import type { InferenceEngine } from "./engine/types";
import { auth, tokenCheck } from "./http/auth";
import { bodyLimit } from "./http/body-limit";
import { healthRoutes } from "./http/health";
import { cors, hostCheck } from "./http/host";
import { memoryGuard } from "./http/memory-guard";
import { type RequestScope, requestScope } from "./http/request-scope";
import { GuardState } from "./lifecycle/guard-state";
import type { Logger } from "./log";
import type { MemoryMonitor } from "./memory/types";

/** The app's tuning (appTuning): --repeat-tool-limit, --answer-repeated-calls and src/config.ts httpDefaults and streamDefaults. */
export interface AppTuning {
  /** 413 above this. Bun's server limit must be set above it (see cli/serve.ts). */
  maxBodyBytes: number;
  /** SSE head start and keep-alive pings; they suit Bun's idle timeout. */
  stream: StreamTiming;
  /** Identical consecutive tool-call turns answered with a text turn (0: off). */
  repeatToolLimit: number;
  /** A first call repeating the one just answered is dropped and the turn generated again (answered-calls.ts). */
  answerRepeatedCalls: boolean;
  /** The temperature of requests that set none (--temperature); undefined: the model's default. */
  temperature?: number | undefined;
  /** retry-after of memory and shutdown 503s. */
  memoryRetryAfterSeconds: number;
  /** retry-after of the 503 for a generation cancelled before its first byte. */
  cancelledRetryAfterSeconds: number;
  /** How long /health waits for the engine's stats before showing the last known ones. */
  healthStatsTimeoutMs: number;
}

/** The app tuning of a serve configuration (tests pass serveDefaults()). */
export function appTuning(cfg: Pick<ServeConfig, "repeatToolLimit" | "answerRepeatedCalls" | "temperature">): AppTuning {
  const { repeatToolLimit, answerRepeatedCalls, temperature } = cfg;
  return { ...httpDefaults, stream: { ...streamDefaults }, repeatToolLimit, answerRepeatedCalls, temperature };
}

/** Server settings createApp needs (cli/serve.ts maps the CLI's ServeConfig onto them). */
export interface AppConfig extends AppTuning {
  /** Token clients must send (x-api-key or Bearer). null disables auth. */
  token: string | null;
  /** Alias map: parsed rules, or the flag's string form ("claude-*haiku*=small,*=default"). */
  aliases: string | readonly AliasRule[];
  /** Host names accepted besides localhost/127.0.0.1/[::1] ("*" accepts any). */
  allowedHosts: readonly string[];
  /** Origins that get CORS headers; none by default. */
  corsOrigins?: readonly string[];
  version: string;
}

/** Everything createApp is built from; tests pass fakes. */
export interface AppDeps {
  engine: InferenceEngine;
  memory: MemoryMonitor;
  /** Accepting flag, drain state and in-flight registry, shared with both shutdowns (default: a new one). */
  state?: GuardState;
  config: AppConfig;
  /** Milliseconds since the epoch; injectable for tests. */
  clock?: () => number;
  logger?: Logger;
  /** Passed to the memory guard: the gate saw Emergency. */
  onEmergency?: (reason: string) => void;
  /** The memory-safety details of /health, under `memory` (shown with the token only). */
  memoryInfo?: () => Record<string, unknown> | Promise<Record<string, unknown>>;
  /** Serve Swagger at /swagger (default true). */
  docs?: boolean;
  /** The memory guard (gate and headers); off only to benchmark its cost (default true). */
  gate?: boolean;
}

/** One onError for everything: Anthropic's body, the request id, retry headers. */
export function errorResponses(scope: RequestScope, logger: Logger | undefined) {
  return new Elysia({ name: "pensieve.errors" })
    .use(scope)
    .onError({ as: "global" }, ({ error, set, request, requestId }) => {
      const id = requestId || newRequestId();
      const mapped = mapError(error, id);
      // Overload and memory refusals are the server working as designed, not failures.
      if (mapped.status === 503 || mapped.status === 529) logger?.info("request refused", { requestId: id, status: mapped.status });
      else if (mapped.status >= 500)
        logger?.error("request failed", { requestId: id, status: mapped.status, error: mapped.body.error.message });
      set.status = mapped.status;
      // A stream that failed before its first byte already set an SSE content type.
      set.headers["content-type"] = "application/json";
      set.headers["request-id"] = id;
      Object.assign(set.headers, mapped.headers);
      return request.method === "HEAD" ? "" : mapped.body;
    });
}

// The memory guard with the Anthropic request sizing and stream error; a bare plugin when off.
function appMemoryGuard(deps: AppDeps, state: GuardState, scope: RequestScope) {
  if (deps.gate === false) return new Elysia({ name: "pensieve.memory" });
  return memoryGuard({
    monitor: deps.memory,
    state,
    scope,
    retryAfterSeconds: deps.config.memoryRetryAfterSeconds,
    model: () => deps.engine.model(),
    estimate: messagesKvDemand,
    admissionHint: ADMISSION_HINT,
    streamError: (reason, id) => sse(errorEvent("overloaded_error", reason, id)),
    ...(deps.logger ? { log: deps.logger } : {}),
    ...(deps.onEmergency ? { onEmergency: deps.onEmergency } : {}),
  });
}

// Swagger at /swagger; a bare plugin when off.
function appDocs(deps: AppDeps) {
  if (deps.docs === false) return new Elysia({ name: "pensieve.docs" });
  return docsPlugin({
    title: "Pensieve",
    version: deps.config.version,
    description: "A local LLM server speaking the Anthropic Messages API, memory safety first.",
  });
}

// /health: levels for anyone, engine stats and memory-safety details with the token.
function appHealth(deps: AppDeps, state: GuardState, clock: () => number) {
  const authorized = tokenCheck(deps.config.token);
  return healthRoutes({
    engine: deps.engine,
    version: deps.config.version,
    clock,
    startedAt: clock(),
    memory: deps.memory,
    state,
    statsTimeoutMs: deps.config.healthStatsTimeoutMs,
    showDetails: (request) => authorized(request.headers),
    ...(deps.memoryInfo ? { memoryInfo: deps.memoryInfo } : {}),
  });
}

function appAnthropic(deps: AppDeps, scope: RequestScope, clock: () => number) {
  const { config } = deps;
  return anthropicRoutes({
    engine: deps.engine,
    aliases: typeof config.aliases === "string" ? parseAliases(config.aliases) : config.aliases,
    clock,
    scope,
    stream: config.stream,
    repeatToolLimit: config.repeatToolLimit,
    answerRepeatedCalls: config.answerRepeatedCalls,
    ...(config.temperature !== undefined ? { temperature: config.temperature } : {}),
    cancelledRetryAfterSeconds: config.cancelledRetryAfterSeconds,
    ...(deps.logger ? { logger: deps.logger } : {}),
  });
}

/** Builds the Elysia app. Every response, errors included, passes the memory guard's header hook. */
export function createApp(deps: AppDeps) {
  const { config } = deps;
  const clock = deps.clock ?? Date.now;
  const state = deps.state ?? new GuardState();
  // One request scope (id, in-flight entry) that every plugin reading it .use()s.
  const scope = requestScope(newRequestId);

  // Elysia's router takes the path from the first "/" at index 11 or later by default, which
  // misreads hosts under 4 characters; 7 is just past "http://". The guards check it strictly.
  return (
    new Elysia({ name: "pensieve.app", handler: { standardHostname: false } })
      .use(errorResponses(scope, deps.logger))
      .use(appMemoryGuard(deps, state, scope))
      // Host and target first: every later guard and the router read the same parsed target.
      .use(hostCheck(config.allowedHosts))
      .use(cors(config.corsOrigins ?? [], ANTHROPIC_REQUEST_HEADERS))
      .use(auth(config.token))
      .use(bodyLimit(config.maxBodyBytes))
      .use(appDocs(deps))
      .use(appHealth(deps, state, clock))
      .use(appAnthropic(deps, scope, clock))
  );
}

export type App = ReturnType<typeof createApp>;
