import { basename, dirname, join } from "node:path";
import { type App, appTuning, createApp } from "../app";
import { materializeBridge } from "../assets/bridge-files";
import { MlxEngine, engineTuning } from "../bridge/mlx-engine";
import { checkBinding, DEFAULT_TOKEN, kvPressureDefaults, type ServeConfig, shutdownDefaults } from "../config";
import type { InferenceEngine, ModelInfo } from "../engine/types";
import { emergencyTimings, withTimeout } from "../lifecycle/emergency";
import { createGracefulShutdown } from "../lifecycle/graceful";
import { type MemorySafety, setupMemorySafety } from "../lifecycle/memory-safety";
import { createMemoryRelief } from "../lifecycle/relief";
import { createLogger, type Logger } from "../log";
import { createMemoryMonitor, monitorTuning, type SampledMemoryMonitor } from "../memory/monitor";
import { KvPressurePoller } from "../memory/kv-pressure";
import { createUpstreamEngine, splitUpstream, upstreamMetrics, upstreamTuning } from "../upstream";
import type { WorkerRuntime } from "../bridge/worker-info";
import { ensureLlamaLibs } from "../bridge/llama-fetch";
import { LLAMA_LIB_DIR_ENV } from "../bridge/llama-lib";
import { blasEnv, openblasHint } from "../models/blas";
import { chooseEngine } from "../models/engine";
import { type PreparedModel, prepareModel } from "../models/prepare";
import { parseModelSpec } from "../models/spec";
import { resolvePython } from "./python";

// Bun's own cap would answer a bare, header-less 413; the app enforces its limit itself, from
// content-length before reading and while reading a chunked body, so Bun's cap is lifted.
const BUN_MAX_BODY_BYTES = Number.MAX_SAFE_INTEGER;

/** The bridge's Python, or an error saying how to get one. */
export function requirePython(cfg: Pick<ServeConfig, "python" | "home">): string {
  const found = resolvePython(cfg.python, cfg.home);
  if (!found.python) {
    throw new Error(
      `no Python environment for the bridge (looked for ${found.tried.join(", ")}).\n` +
        "Run `pensieve setup` (or `npm start` in the repository), or pass --python /path/to/python.",
    );
  }
  return found.python;
}

// The llama engine's libraries (npm's @node-llama-cpp/<platform>), when llama would run the model:
// found, else fetched from npm on first use into <home>/llama. Null when that fails: a defaulted
// llama then runs on mlx, an explicit one reaches the worker, which explains their absence.
async function llamaLibs(cfg: ServeConfig): Promise<string | null> {
  const spec = parseModelSpec(cfg.model);
  if (spec.kind === "demo" || chooseEngine(spec, cfg.engine, cfg.explicit.has("engine"), true).engine !== "llama") return null;
  const libs = await ensureLlamaLibs({ home: cfg.home, log: (line) => process.stderr.write(`pensieve: ${line}\n`) });
  return libs.dir;
}

async function buildMlxEngine(cfg: ServeConfig, log: Logger): Promise<{ engine: MlxEngine; prepared: PreparedModel }> {
  const python = requirePython(cfg);
  const script = await materializeBridge(join(cfg.home, "bridge"));
  const bridgeDir = dirname(script);
  const llamaDir = await llamaLibs(cfg);
  const prepared = await prepareModel(cfg.model, {
    python,
    bridgeDir,
    home: cfg.home,
    engine: cfg.engine,
    engineExplicit: cfg.explicit.has("engine"),
    modelExplicit: cfg.explicit.has("model"),
    llamaReady: llamaDir !== null,
    log: (line) => process.stderr.write(`pensieve: ${line}\n`),
  });
  if (prepared.isDemo) log.info("serving the tiny demo model (random weights)");
  const blas = prepared.engine === "mlx" ? blasEnv() : llamaDir ? { [LLAMA_LIB_DIR_ENV]: llamaDir } : {};
  const hint = prepared.engine === "mlx" ? openblasHint() : null;
  if (hint) process.stderr.write(`pensieve: OpenBLAS is missing, so MLX runs on the slow reference BLAS; install it with: ${hint}\n`);
  const engine = new MlxEngine({
    python,
    script,
    model: prepared.model,
    engine: prepared.engine,
    ...(prepared.tokenizer ? { tokenizer: prepared.tokenizer } : {}),
    ...(prepared.modelId ? { modelId: prepared.modelId } : {}),
    isDemo: prepared.isDemo,
    env: blas,
    ...engineTuning(cfg),
    forwardStderr: true,
    logger: log,
  });
  return { engine, prepared };
}

// The worker's runtime (engine, device, BLAS, dtype), when modelInfoOf attached it.
function describeRuntime(m: ModelInfo): string {
  const r = (m as ModelInfo & { runtime?: WorkerRuntime }).runtime;
  if (!r) return "";
  const parts = [r.engine, r.device, r.blas, r.quantization ?? r.dtype].filter((x): x is string => !!x);
  return ` [${parts.join(", ")}]`;
}

function describeModel(m: ModelInfo | null, cfg: ServeConfig): string {
  if (cfg.backend === "openai") return `upstream ${cfg.upstream ?? "(routes)"}${m ? ` model ${m.id}` : ""}`;
  if (!m) return "no model";
  return m.isDemo
    ? `model ${m.id}${describeRuntime(m)} (DEMO: random weights, its output is gibberish; pass --model for a real one)`
    : `model ${m.id}${describeRuntime(m)}`;
}

// A llama-engine load that fails is most likely a worker without that engine yet.
function explainLoadError(err: unknown, prepared: PreparedModel | undefined): unknown {
  if (prepared?.engine !== "llama") return err;
  const why = err instanceof Error ? err.message : String(err);
  return new Error(
    `the llama.cpp engine could not load ${prepared.model}: ${why}\n` +
      "If this worker has no llama engine yet, serve the GGUF on the mlx engine instead: --engine mlx (PENSIEVE_ENGINE=mlx).",
  );
}

// The engine serve runs on: the local worker, or an OpenAI-compatible upstream (or its routes).
async function buildEngine(cfg: ServeConfig, log: Logger): Promise<{ engine: InferenceEngine; prepared?: PreparedModel }> {
  if (cfg.backend !== "openai") return buildMlxEngine(cfg, log);
  const engine = createUpstreamEngine({
    ...upstreamTuning(cfg),
    ...(cfg.upstream ? { upstream: cfg.upstream } : {}),
    ...(cfg.upstreamKey ? { apiKey: cfg.upstreamKey } : {}),
    ...(cfg.upstreamRoutes ? { routes: cfg.upstreamRoutes } : {}),
    logger: log,
  });
  return { engine };
}

// The upstream's KV-cache pressure (--upstream-metrics), polling before the monitor starts.
async function startKvPoller(cfg: ServeConfig): Promise<KvPressurePoller | undefined> {
  if (cfg.backend !== "openai" || !cfg.upstreamMetrics || !cfg.upstream) return undefined;
  const metrics = upstreamMetrics({ baseUrl: splitUpstream(cfg.upstream).baseUrl, ...(cfg.upstreamKey ? { apiKey: cfg.upstreamKey } : {}) });
  const poller = new KvPressurePoller({ ...kvPressureDefaults, metrics });
  await poller.start();
  return poller;
}

// The upstream's KV-cache pressure raises the gate's level; the local reading stays the source of GB figures.
async function startMonitor(cfg: ServeConfig, kvPoller: KvPressurePoller | undefined, log: Logger): Promise<SampledMemoryMonitor> {
  const monitor = createMemoryMonitor({
    ...monitorTuning(cfg),
    ...(cfg.memorySource ? { source: cfg.memorySource } : {}),
    ...(kvPoller ? { pressures: [kvPoller] } : {}),
    log,
  });
  await monitor.start();
  return monitor;
}

// The local worker must load now or there is nothing to serve; an upstream may come up later.
async function startEngine(cfg: ServeConfig, engine: InferenceEngine, prepared: PreparedModel | undefined, monitor: SampledMemoryMonitor, log: Logger): Promise<void> {
  try {
    await engine.start();
  } catch (err) {
    if (cfg.backend !== "openai") {
      monitor.stop();
      await engine.stop().catch(() => {});
      throw explainLoadError(err, prepared);
    }
    log.warn("upstream not reachable at start; serving 503 until it is", { error: String(err) });
  }
}

function serveApp(cfg: ServeConfig, version: string, engine: InferenceEngine, monitor: SampledMemoryMonitor, safety: MemorySafety, log: Logger): App {
  return createApp({
    engine,
    memory: monitor,
    config: {
      ...appTuning(cfg),
      token: cfg.token,
      aliases: cfg.aliases,
      allowedHosts: cfg.allowedHosts,
      corsOrigins: cfg.corsOrigins,
      version,
    },
    state: safety.state,
    logger: log,
    onEmergency: safety.onEmergency,
    memoryInfo: safety.memoryInfo,
  });
}

function listen(cfg: ServeConfig, app: App) {
  return Bun.serve({
    hostname: cfg.host,
    port: cfg.port,
    fetch: (req) => app.handle(req),
    maxRequestBodySize: BUN_MAX_BODY_BYTES,
    // Bun closes connections idle for 10 s by default; a non-streaming generation sends nothing
    // until it ends, so the idle timeout is off (streams still ping every few seconds).
    idleTimeout: 0,
  });
}

// The one startup line: URL, model and how to point Claude Code at it.
function printBanner(cfg: ServeConfig, version: string, port: number | undefined, engine: InferenceEngine, monitor: SampledMemoryMonitor): void {
  // A custom token is a secret: keep it out of service logs that capture stdout.
  const shownToken = cfg.token === DEFAULT_TOKEN ? cfg.token : "<your --token>";
  const host = cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host;
  const url = `http://${host}:${port}`;
  const memNote = cfg.memorySource ? ` · ${monitor.describe()}` : "";
  console.log(
    `Pensieve ${version} listening on ${url} · ${describeModel(engine.model(), cfg)}${memNote} · ` +
      `Claude Code: ANTHROPIC_BASE_URL=${url} ANTHROPIC_API_KEY=${shownToken} claude  (or scripts/claude-local)`,
  );
}

/** What the Ctrl-C/SIGTERM shutdown stops, in order. */
interface ServeParts {
  server: ReturnType<typeof listen>;
  engine: InferenceEngine;
  monitor: SampledMemoryMonitor;
  relief: { stop(): void };
  kvPoller: KvPressurePoller | undefined;
}

// Ctrl-C/SIGTERM drain running generations (--shutdown-drain-ms); a second signal ends the wait.
function installSignals(cfg: ServeConfig, safety: MemorySafety, parts: ServeParts, log: Logger): void {
  const graceful = createGracefulShutdown({
    log,
    state: safety.state,
    drainMs: cfg.shutdownDrainMs,
    flushMs: shutdownDefaults.flushTimeoutMs,
    stop: async () => {
      parts.monitor.stop();
      parts.relief.stop();
      parts.kvPoller?.stop();
      // Lets responses still being written finish, but an idle keep-alive must not hold the exit.
      await Promise.race([parts.server.stop(false), Bun.sleep(shutdownDefaults.serverCloseMs)]);
      await withTimeout(parts.engine.stop(), emergencyTimings(cfg).stopTimeoutMs, "engine stop");
    },
  });
  process.on("SIGINT", () => void graceful.signal("SIGINT"));
  process.on("SIGTERM", () => void graceful.signal("SIGTERM"));
}

/** `pensieve serve`: load the model, listen, print one line, and shut down cleanly on signals. */
export async function runServe(cfg: ServeConfig, version: string): Promise<void> {
  // Before any model loads: a refused bind exits 2 at once.
  const bindWarning = checkBinding(cfg);
  if (bindWarning) process.stderr.write(`pensieve: ${bindWarning}\n`);
  const log = createLogger(process.env.PENSIEVE_LOG_LEVEL);
  const { engine, prepared } = await buildEngine(cfg, log);
  const kvPoller = await startKvPoller(cfg);
  const monitor = await startMonitor(cfg, kvPoller, log);
  const safety = setupMemorySafety({ ...emergencyTimings(cfg), monitor, engine, log, logDir: cfg.logDir });
  await startEngine(cfg, engine, prepared, monitor, log);

  // Prompt caches are given up first under memory pressure, before the gate refuses anything.
  const relief = createMemoryRelief({ monitor, engine, log });
  relief.start();
  const server = listen(cfg, serveApp(cfg, version, engine, monitor, safety, log));
  printBanner(cfg, version, server.port, engine, monitor);
  installSignals(cfg, safety, { server, engine, monitor, relief, kvPoller }, log);
  // The model name is shown by basename in logs only.
  const path = engine.model()?.path;
  log.debug("ready", { model: path ? basename(path) : null });
}
