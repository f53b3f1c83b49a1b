import { Elysia, t } from "elysia";
import type { EngineStats, InferenceEngine } from "../engine/types";

/** What /health reads. */
export interface HealthDeps {
  engine: InferenceEngine;
  version: string;
  clock: () => number;
  startedAt: number;
  /** Extra fields merged under `memory` (the memory-safety work provides them). */
  memoryInfo?: () => Record<string, unknown> | Promise<Record<string, unknown>>;
  /** How long /health waits for the engine's stats before answering without them. */
  statsTimeoutMs?: number;
}

export const HealthResponse = t.Object(
  {
    status: t.String({ description: '"ok" when the engine is ready, else the engine state.' }),
    ready: t.Boolean(),
    model: t.Union([t.String(), t.Null()]),
    version: t.String(),
    uptime_s: t.Number(),
    engine: t.Object({ state: t.String() }, { additionalProperties: true }),
    memory: t.Optional(t.Object({}, { additionalProperties: true })),
  },
  { title: "HealthResponse" },
);

async function statsWithin(engine: InferenceEngine, ms: number): Promise<EngineStats | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms)));
  try {
    return await Promise.race([engine.stats().catch(() => null), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** GET /health (always 200; `ready` says whether inference can run) and Claude Code's probe. */
export function healthRoutes(deps: HealthDeps) {
  return new Elysia({ name: "pensieve.health" })
    .model({ HealthResponse })
    .get(
      "/health",
      async () => {
        const state = deps.engine.state();
        // A busy or dead worker must not hang the health check.
        const stats = await statsWithin(deps.engine, deps.statsTimeoutMs ?? 1000);
        const body: Record<string, unknown> = {
          status: state === "ready" ? "ok" : state,
          ready: state === "ready",
          model: deps.engine.model()?.id ?? null,
          version: deps.version,
          uptime_s: Math.round((deps.clock() - deps.startedAt) / 100) / 10,
          engine: stats ? { ...stats, state } : { state },
        };
        if (deps.memoryInfo) body.memory = await deps.memoryInfo();
        return body;
      },
      {
        detail: {
          tags: ["Server"],
          summary: "Health",
          description: "Status, model, uptime, engine state and stats, memory. No token needed.",
          responses: { 200: { description: "Health", content: { "application/json": { schema: { $ref: "#/components/schemas/HealthResponse" } } } } },
        },
      },
    )
    .get("/api/hello", () => ({ status: "ok" }), {
      detail: { tags: ["Server"], summary: "Connectivity probe", description: "Claude Code's probe. No token needed." },
    })
    .head("/api/hello", () => new Response(null, { status: 200 }), {
      detail: { tags: ["Server"], summary: "Connectivity probe (HEAD)" },
    });
}
