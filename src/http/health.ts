import { Elysia, t } from "elysia";
import type { EngineStats, InferenceEngine } from "../engine/types";
import type { GuardState } from "../lifecycle/guard-state";
import type { MemoryMonitor } from "../memory/types";

type Fields = Record<string, unknown>;

/** What /health reads. */
export interface HealthDeps {
  engine: InferenceEngine;
  version: string;
  clock: () => number;
  startedAt: number;
  /** The server's own memory sampler: its level and free GB are always shown. */
  memory: MemoryMonitor;
  /** The guard's state: a Ctrl-C/SIGTERM drain shows in the status. */
  state: Pick<GuardState, "shutdown">;
  /** Extra fields merged under `memory` (the memory-safety work provides them). */
  memoryInfo?: () => Fields | Promise<Fields>;
  /** Whether this request may see the details (engine stats, paths, pids, memory source). */
  showDetails: (request: Request) => boolean;
  /** How long /health waits for the engine's stats before answering with the last known ones. */
  statsTimeoutMs: number;
}

export const HealthResponse = t.Object(
  {
    status: t.String({ description: '"ok" when the engine is ready, "draining"/"stopping" during a shutdown, else the engine state.' }),
    ready: t.Boolean(),
    model: t.Union([t.String(), t.Null()]),
    version: t.String(),
    uptime_s: t.Number(),
    engine: t.Object({ state: t.String() }, { additionalProperties: true }),
    memory: t.Object({ status: t.String(), available_gb: t.Union([t.Number(), t.Null()]) }, { additionalProperties: true }),
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

const round = (n: number) => Math.round(n * 1000) / 1000;

/** The sampler's level and free GB: read from its last sample, never from the worker. */
function memoryLevels(monitor: MemoryMonitor): Fields {
  const gb = monitor.availableGb();
  return { status: monitor.checkStatus(), available_gb: Number.isFinite(gb) ? round(gb) : null };
}

/** The memory fields: the sampler's levels, under the memory-safety details when those are given. */
async function memoryFields(deps: HealthDeps, details: boolean): Promise<Fields> {
  const levels = memoryLevels(deps.memory);
  if (!details || !deps.memoryInfo) return levels;
  try {
    return { ...levels, ...(await deps.memoryInfo()) };
  } catch {
    return levels;
  }
}

/** Engine stats, falling back to the last ones seen (with their age) when the engine is slow. */
function statsCache(deps: HealthDeps) {
  let last: { stats: EngineStats; at: number } | null = null;
  return async (): Promise<Fields> => {
    const state = deps.engine.state();
    const stats = await statsWithin(deps.engine, deps.statsTimeoutMs);
    if (stats) {
      last = { stats, at: deps.clock() };
      return { ...stats, state };
    }
    if (!last) return { state };
    // Old counts would lie to pollers waiting for an idle engine; the worker's figures keep their age.
    const { queued: _q, running: _r, ...worker } = last.stats;
    const priorAge = (last.stats as { statsAgeMs?: number }).statsAgeMs ?? 0;
    return { ...worker, state, statsAgeMs: priorAge + Math.max(0, deps.clock() - last.at) };
  };
}

/**
 * GET /health (always 200; `ready` says whether inference can run) and Claude Code's probe.
 * Without the token it shows the model's name, status, version, uptime and memory level only.
 */
export function healthRoutes(deps: HealthDeps) {
  const engineFields = statsCache(deps);
  return new Elysia({ name: "pensieve.health" })
    .model({ HealthResponse })
    .get(
      "/health",
      async ({ request }) => {
        const state = deps.engine.state();
        const details = deps.showDetails(request);
        const engine = details ? await engineFields() : { state };
        // From the sampler, never the worker; read after the engine's counts so both describe the same moment.
        const memory = await memoryFields(deps, details);
        // A Ctrl-C/SIGTERM drain refuses new work: say so even without the token.
        const phase = deps.state.shutdown()?.phase;
        const ready = state === "ready" && !phase;
        return {
          status: phase ?? (state === "ready" ? "ok" : state),
          ready,
          model: deps.engine.model()?.id ?? null,
          version: deps.version,
          uptime_s: Math.round((deps.clock() - deps.startedAt) / 100) / 10,
          engine,
          memory,
        };
      },
      {
        detail: {
          tags: ["Server"],
          summary: "Health",
          description:
            "Status, model name, version, uptime, engine state and memory level. No token needed; with the token it adds the engine's stats and the memory-safety details.",
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
