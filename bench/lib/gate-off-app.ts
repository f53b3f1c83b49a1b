/**
 * The "gate off" side of the gate benchmark: createApp's plugin stack (src/app.ts) without the
 * memory guard, so that on/off differ by the guard alone. Keep in step with createApp; the
 * bench compares it with createApp(..., docs: false), which it mirrors.
 */
import { Elysia } from "elysia";
import { parseAliases } from "../../src/anthropic/aliases";
import { mapError, newRequestId } from "../../src/anthropic/errors";
import { anthropicRoutes } from "../../src/anthropic/routes";
import type { AppDeps } from "../../src/app";
import { auth } from "../../src/http/auth";
import { bodyLimit, DEFAULT_MAX_BODY_BYTES } from "../../src/http/body-limit";
import { healthRoutes } from "../../src/http/health";
import { cors, hostCheck } from "../../src/http/host";
import { requestId, requestIdOf } from "../../src/http/request-id";

export function createAppWithoutGate(deps: Omit<AppDeps, "memory" | "onEmergency">) {
  const { engine, config, logger } = deps;
  const clock = deps.clock ?? Date.now;
  const startedAt = clock();
  const aliases = typeof config.aliases === "string" ? parseAliases(config.aliases) : config.aliases;
  return new Elysia({ name: "pensieve.app" })
    .onError({ as: "global" }, ({ error, set, request }) => {
      const id = requestIdOf(set) ?? newRequestId();
      const mapped = mapError(error, id);
      set.status = mapped.status;
      set.headers["content-type"] = "application/json";
      set.headers["request-id"] = id;
      Object.assign(set.headers, mapped.headers);
      return request.method === "HEAD" ? "" : mapped.body;
    })
    .use(requestId())
    .use(hostCheck(config.allowedHosts))
    .use(cors(config.corsOrigins ?? []))
    .use(auth(config.token))
    .use(bodyLimit(config.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES))
    .use(healthRoutes({ engine, version: config.version, clock, startedAt }))
    .use(anthropicRoutes({ engine, aliases, clock, ...(logger ? { logger } : {}), ...(config.stream ? { stream: config.stream } : {}) }));
}
