import { basename } from "node:path";
import { type App, appTuning, createApp } from "../app";
import { checkBinding, DEFAULT_TOKEN, kvPressureDefaults, type ServeConfig, shutdownDefaults } from "../config";
import type { InferenceEngine, ModelInfo } from "../engine/types";
import { emergencyTimings, withTimeout } from "../lifecycle/emergency";
import { createGracefulShutdown } from "../lifecycle/graceful";
import { type MemorySafety, setupMemorySafety } from "../lifecycle/memory-safety";
import { createMemoryRelief } from "../lifecycle/relief";
import { createLogger, type Logger } from "../log";
import { createMemoryMonitor, monitorTuning, type SampledMemoryMonitor } from "../memory/monitor";
import { KvPressurePoller } from "../memory/kv-pressure";
import type { WorkerRuntime } from "../bridge/worker-info";
import type { PreparedModel } from "../models/prepare";
import { createUpstreamEngine, splitUpstream, upstreamMetrics, upstreamTuning } from "../upstream";
import { buildLocalEngine, explainLoadError } from "./local-engine";

// Bun's own cap would answer a bare, header-less 413; the app enforces its limit itself, from
// content-length before reading and while reading a chunked body, so Bun's cap is lifted.
const BUN_MAX_BODY_BYTES = Number.MAX_SAFE_INTEGER;

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

// The engine serve runs on: the local worker, or an OpenAI-compatible upstream (or its routes).
async function buildEngine(cfg: ServeConfig, log: Logger): Promise<{ engine: InferenceEngine; prepared?: PreparedModel }> {
  if (cfg.backend !== "openai") return buildLocalEngine(cfg, log);
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
