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
import { errorEvent } from "./anthropic/stream";
import { docsPlugin } from "./docs/plugin";
import type { InferenceEngine } from "./engine/types";
import { auth, tokenCheck } from "./http/auth";
import { bodyLimit, DEFAULT_MAX_BODY_BYTES } from "./http/body-limit";
import { healthRoutes } from "./http/health";
import { cors, hostCheck } from "./http/host";
import { memoryGuard } from "./http/memory-guard";
import { requestScope } from "./http/request-scope";
import { GuardState } from "./lifecycle/guard-state";
import type { Logger } from "./log";
import type { MemoryMonitor } from "./memory/types";

/** Server settings createApp needs (cli/serve.ts maps the CLI's ServeConfig onto them). */
export interface AppConfig {
  /** Token clients must send (x-api-key or Bearer). null disables auth. */
  token: string | null;
  /** Alias map: parsed rules, or the flag's string form ("claude-*haiku*=small,*=default"). */
  aliases: string | readonly AliasRule[];
  /** Host names accepted besides localhost/127.0.0.1/[::1] ("*" accepts any). */
  allowedHosts: readonly string[];
  /** Origins that get CORS headers; none by default. */
  corsOrigins?: readonly string[];
  /** 413 above this; default 32 MB. Bun's server limit must be set above it (see main.ts). */
  maxBodyBytes?: number;
  version: string;
  /** SSE head start and keep-alive pings; defaults suit Bun's idle timeout. */
  stream?: StreamTiming;
  /** Identical consecutive tool-call turns answered with a text turn (0: off; default 3). */
  repeatToolLimit?: number;
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

/** Builds the Elysia app. Every response, errors included, passes the memory guard's header hook. */
export function createApp(deps: AppDeps) {
  const { engine, config, logger } = deps;
  const clock = deps.clock ?? Date.now;
  const startedAt = clock();
  const aliases = typeof config.aliases === "string" ? parseAliases(config.aliases) : config.aliases;

  const authorized = tokenCheck(config.token);
  const state = deps.state ?? new GuardState();
  // One request scope (id, in-flight entry) that every plugin reading it .use()s.
  const scope = requestScope(newRequestId);

  // Elysia's router takes the path from the first "/" at index 11 or later by default, which
  // misreads hosts under 4 characters; 7 is just past "http://". The guards check it strictly.
  const app = new Elysia({ name: "pensieve.app", handler: { standardHostname: false } })
    // One onError for everything: Anthropic's body, the request id, retry headers.
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
    })
    .use(
      deps.gate === false
        ? new Elysia({ name: "pensieve.memory" })
        : memoryGuard({
            monitor: deps.memory,
            state,
            scope,
            model: () => engine.model(),
            estimate: messagesKvDemand,
            admissionHint: ADMISSION_HINT,
            streamError: (reason, id) => sse(errorEvent("overloaded_error", reason, id)),
            ...(logger ? { log: logger } : {}),
            ...(deps.onEmergency ? { onEmergency: deps.onEmergency } : {}),
          }),
    )
    // Host and target first: every later guard and the router read the same parsed target.
    .use(hostCheck(config.allowedHosts))
    .use(cors(config.corsOrigins ?? [], ANTHROPIC_REQUEST_HEADERS))
    .use(auth(config.token))
    .use(bodyLimit(config.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES));

  const withDocs =
    deps.docs === false
      ? app
      : app.use(
          docsPlugin({
            title: "Pensieve",
            version: config.version,
            description: "A local LLM server speaking the Anthropic Messages API, memory safety first.",
          }),
        );

  return withDocs
    .use(
      healthRoutes({
        engine,
        version: config.version,
        clock,
        startedAt,
        memory: deps.memory,
        state,
        showDetails: (request) => authorized(request.headers),
        ...(deps.memoryInfo ? { memoryInfo: deps.memoryInfo } : {}),
      }),
    )
    .use(
      anthropicRoutes({
        engine,
        aliases,
        clock,
        scope,
        ...(logger ? { logger } : {}),
        ...(config.stream ? { stream: config.stream } : {}),
        ...(config.repeatToolLimit !== undefined ? { repeatToolLimit: config.repeatToolLimit } : {}),
      }),
    );
}

export type App = ReturnType<typeof createApp>;
