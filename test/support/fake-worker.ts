/**
 * A fake model worker speaking python_bridge/PROTOCOL.md v1, run with the bun binary
 * in place of Python. Behaviour per generation comes from the last message's content:
 *   "slow…"     tokens every FAKE_WORKER_TOKEN_MS (default 20) ms up to max_tokens, honouring cancel
 *   "crash"     started, two deltas, stderr lines "simulated crash: boom" and one quoting SECRET_IN_STDERR, then exit 3
 *   "block"     started, progress, then the whole process stalls FAKE_WORKER_BLOCK_MS (default 1500) ms
 *               (a long prefill chunk), then a few tokens
 *   "hang"      started, then ignores everything (stdin, cancel, shutdown)
 *   "garbage"   started, then a non-JSON line on stdout
 *   "too_long"  error prompt_too_long (5000 > 2048);  "bad" error bad_request;  "internal" error internal
 *   "utf8"      deltas with multi-byte characters
 *   "tool"      a delta, then a Bash tool_call (echo pensieve-tool-ok), done{tool_calls};
 *               "tools2" two calls (one with parallel_tool_calls false)
 *   "think"     thinking events (only with enable_thinking), then a delta
 *   anything else: a few tokens, then done.
 * count_tokens by the last message's content: "slowcount" stalls the whole process FAKE_WORKER_COUNT_MS
 * (default 1000) ms first, as the real worker's loop does while it tokenizes; "hangcount" never answers
 * (and ignores everything after); "crashcount" exits 4.
 * With the argument --counter it is a token counter (load, count_tokens, stats, shutdown only), journaled with role "counter";
 * FAKE_WORKER_COUNTER_LOAD=fail makes its load fail.
 * A prompt-prefix cache is simulated: a prompt whose messages but the last were seen before
 * reports cached_tokens; `stats` carries prompt_cache and `cache_relieve` trims or drops it.
 * Start-up behaviour from env: FAKE_WORKER_START=crash|silent, FAKE_WORKER_LOAD=fail,
 * FAKE_WORKER_STUBBORN=1 (ignores shutdown, EOF and SIGTERM), FAKE_WORKER_JOURNAL=file
 * (appends every received command as a JSON line), FAKE_WORKER_CONCURRENCY=N (max_concurrency).
 */

import { appendFileSync, writeSync } from "node:fs";

type Cmd = { v: number; id: string; cmd: string; [k: string]: unknown };
type Msg = { role: string; content: string };

const env = process.env;
const tokenMs = Number(env.FAKE_WORKER_TOKEN_MS ?? 20);
const stubborn = env.FAKE_WORKER_STUBBORN === "1";
const concurrency = Math.max(1, Number(env.FAKE_WORKER_CONCURRENCY ?? 1));
const isCounter = process.argv.includes("--counter");
/** Written to stderr before a "crash" (test/unit/bridge/helpers.ts FAKE_SECRET): server log only, never a client. */
const SECRET_IN_STDERR = "SECRET-PROMPT-FRAGMENT-7f3a";

// Synchronous writes: nothing may be lost when the process exits right after.
const out = (m: Record<string, unknown>) => writeSync(1, `${JSON.stringify({ v: 1, ...m })}\n`);
const log = (s: string) => writeSync(2, `${s}\n`);

let hung = false;
let loaded: string | null = null;
type Gen = { id: string; cancelled: boolean };
const active = new Map<string, Gen>();
const deferred: Cmd[] = [];
/** Prompt-prefix cache: key (all messages but the last) -> prefix tokens. */
const cache = new Map<string, number>();
const cacheStats = { hits: 0, misses: 0, tokens_reused: 0 };
const CACHE_MAX = 4;

log("fake worker starting");
if (env.FAKE_WORKER_START === "crash") {
  log("ImportError: cannot import mlx (simulated)");
  process.exit(1);
}
if (env.FAKE_WORKER_START === "silent") {
  setInterval(() => {}, 1000);
} else {
  out({ type: "hello", pid: process.pid, python: "fake", mlx: "0", mlx_lm: "0", platform: process.platform });
}
if (stubborn) {
  process.on("SIGTERM", () => log("ignoring SIGTERM"));
  setInterval(() => {}, 1000); // stays up after stdin closes
}

function promptTokens(messages: Msg[]): number {
  return messages.reduce((n, m) => n + String(m.content).length, 0) + 3 * messages.length;
}

const cacheBytes = () => [...cache.values()].reduce((n, t) => n + t * 4096, 0);
const promptCache = () => ({ entries: cache.size, bytes: cacheBytes(), max_entries: CACHE_MAX, max_bytes: 2e9, ...cacheStats });

function journal(cmd: Cmd): void {
  if (!env.FAKE_WORKER_JOURNAL) return;
  const { cmd: c, id, target, level, tool_choice, parallel_tool_calls, tools } = cmd;
  const role = isCounter ? "counter" : undefined;
  const entry = { cmd: c, id, target, level, tool_choice, parallel_tool_calls, tools: Array.isArray(tools) ? tools.length : undefined, role };
  appendFileSync(env.FAKE_WORKER_JOURNAL, `${JSON.stringify(entry)}\n`);
}

const lastContent = (cmd: Cmd): string => {
  const messages = Array.isArray(cmd.messages) ? (cmd.messages as Msg[]) : [];
  return String(messages[messages.length - 1]?.content ?? "");
};

function countTokens(cmd: Cmd): void {
  const what = lastContent(cmd);
  if (what === "hangcount") {
    hung = true;
    setInterval(() => {}, 1000);
    return;
  }
  if (what === "crashcount") {
    log(`tokenizer blew up on ${SECRET_IN_STDERR}`);
    process.exit(4);
  }
  // Synchronous on purpose: nothing else in this process moves meanwhile.
  if (what === "slowcount") Bun.sleepSync(Number(env.FAKE_WORKER_COUNT_MS ?? 1000));
  out({ type: "count", id: cmd.id, input_tokens: promptTokens(cmd.messages as Msg[]) });
}

/** The --counter role: a tokenizer only. */
function handleAsCounter(cmd: Cmd): void {
  const id = cmd.id;
  switch (cmd.cmd) {
    case "load":
      if (env.FAKE_WORKER_COUNTER_LOAD === "fail") return void out({ type: "error", id, code: "load_failed", message: "no tokenizer here" });
      loaded = String(cmd.model);
      return void out({ type: "loaded", id, model: loaded, counter: true });
    case "count_tokens":
      if (!loaded) return void out({ type: "error", id, code: "not_loaded", message: "no tokenizer" });
      return countTokens(cmd);
    case "stats":
      return void out({ type: "stats", id, model: loaded, memory: { rss_gb: 0.03 } });
    case "shutdown":
      out({ type: "bye", id });
      if (!stubborn) process.exit(0);
      return;
    default:
      out({ type: "error", id, code: "bad_request", message: `the token counter does not serve ${cmd.cmd}` });
  }
}

function handle(cmd: Cmd): void {
  journal(cmd);
  if (isCounter) return handleAsCounter(cmd);
  const id = cmd.id;
  switch (cmd.cmd) {
    case "cancel": {
      const gen = active.get(String(cmd.target));
      const found = gen !== undefined && !gen.cancelled;
      if (found) gen.cancelled = true;
      return void out({ type: "cancelled", id, target: cmd.target, found });
    }
    case "stats":
      return void out({
        type: "stats",
        id,
        model: loaded,
        generating: [...active.keys()][0] ?? null,
        memory: { active_gb: 0.01, cache_gb: 0, peak_gb: 0.02, rss_gb: 0.05 },
        prompt_cache: promptCache(),
      });
    case "count_tokens":
      return countTokens(cmd);
    case "cache_relieve": {
      // trim keeps the newest half, drop empties.
      const keep = cmd.level === "trim" ? Math.floor(cache.size / 2) : 0;
      for (const k of [...cache.keys()].slice(0, cache.size - keep)) cache.delete(k);
      return void out({ type: "relieved", id, level: cmd.level, entries: cache.size, bytes: cacheBytes() });
    }
  }
  if (cmd.cmd === "generate" && loaded && active.size > 0 && active.size < concurrency && deferred.length === 0) {
    return startGenerate(cmd);
  }
  if (active.size > 0) {
    deferred.push(cmd);
    return;
  }
  switch (cmd.cmd) {
    case "load":
      if (env.FAKE_WORKER_LOAD === "fail") return void out({ type: "error", id, code: "internal", message: "no such model" });
      loaded = String(cmd.model);
      return void out({
        type: "loaded",
        id,
        model: loaded,
        context_length: 2048,
        vocab_size: 512,
        supports_vision: false,
        kv_bytes_per_token: 4096,
        max_concurrency: concurrency,
        has_tool_calling: true,
        tool_parser: "json_tools",
        has_thinking: true,
      });
    case "clear_cache":
      return void out({ type: "cleared", id, memory: { active_gb: 0.01, cache_gb: 0, peak_gb: 0.02 } });
    case "shutdown":
      out({ type: "bye", id });
      if (!stubborn) process.exit(0);
      return;
    case "generate":
      if (!loaded) return void out({ type: "error", id, code: "not_loaded", message: "no model" });
      return startGenerate(cmd);
    default:
      out({ type: "error", id, code: "bad_request", message: `unknown command ${cmd.cmd}` });
  }
}

function startGenerate(cmd: Cmd): void {
  const gen: Gen = { id: cmd.id, cancelled: false };
  active.set(gen.id, gen);
  void generate(cmd, gen).finally(() => {
    active.delete(gen.id);
    // Deferred commands run once nothing generates; deferred generates fill free slots.
    while (!hung && deferred.length) {
      const next = deferred[0] as Cmd;
      const fits = next.cmd === "generate" ? active.size < concurrency : active.size === 0;
      if (!fits) break;
      deferred.shift();
      if (next.cmd === "generate") startGenerate(next);
      else handle(next);
    }
  });
}

/** Cached prefix tokens for this prompt, and the prompt remembered for next time. */
function lookupCache(messages: Msg[]): number {
  const prefix = messages.slice(0, -1);
  const key = JSON.stringify(prefix);
  const hit = cache.get(key);
  if (hit !== undefined && hit > 0) {
    cacheStats.hits++;
    cacheStats.tokens_reused += hit;
  } else cacheStats.misses++;
  cache.delete(key);
  cache.set(key, promptTokens(prefix as Msg[]));
  while (cache.size > CACHE_MAX) cache.delete(cache.keys().next().value as string);
  return hit ?? 0;
}

async function generate(cmd: Cmd, state: Gen): Promise<void> {
  const id = cmd.id;
  const messages = cmd.messages as Msg[];
  const what = String(messages[messages.length - 1]?.content ?? "");
  const maxTokens = Number(cmd.max_tokens ?? 16);
  const prompt = promptTokens(messages);
  if (what === "too_long") {
    return void out({ type: "error", id, code: "prompt_too_long", message: "prompt has 5000 tokens; the context holds 2048", prompt_tokens: 5000, max_context: 2048 });
  }
  if (what === "bad") return void out({ type: "error", id, code: "bad_request", message: "temperature out of range" });
  if (what === "internal") return void out({ type: "error", id, code: "internal", message: "metal exploded" });
  const cached = lookupCache(messages);
  // The fake keeps the prefix (all but the last message): that much of it is newly written.
  const created = Math.max(0, promptTokens(messages.slice(0, -1)) - cached);
  out({ type: "started", id, prompt_tokens: prompt, cached_tokens: cached });
  out({ type: "progress", id, processed: prompt, total: prompt });
  if (what === "hang") {
    hung = true;
    setInterval(() => {}, 1000);
    return new Promise(() => {});
  }
  if (what === "garbage") {
    writeSync(1, "this is not json\n");
    return new Promise(() => {});
  }
  if (what === "tool" || what === "tools2" || what === "think") return toolOrThink(cmd, state, what, prompt, cached, created);
  if (what === "block") Bun.sleepSync(Number(env.FAKE_WORKER_BLOCK_MS ?? 1500));
  const pieces = what === "utf8" ? ["h\u00e9", "llo \u{1F30D}", " \u4e16\u754c"] : null;
  const slow = what.startsWith("slow");
  const n = pieces ? pieces.length : slow ? maxTokens : Math.min(maxTokens, 5);
  let emitted = 0;
  for (; emitted < n; emitted++) {
    await Bun.sleep(slow ? tokenMs : 1);
    if (state.cancelled) break;
    out({ type: "delta", id, text: pieces ? pieces[emitted] : `tok${emitted} ` });
    if (what === "crash" && emitted === 1) {
      log("Traceback (most recent call last):");
      log(`  File "/Users/alice/work/secret.py", line 1, in <module>: ${SECRET_IN_STDERR}`);
      log("simulated crash: boom");
      process.exit(3);
    }
  }
  const reason = state.cancelled ? "cancelled" : emitted >= maxTokens ? "length" : "stop";
  out({ type: "done", id, finish_reason: reason, stop_sequence: null, prompt_tokens: prompt, completion_tokens: emitted, cached_tokens: cached, cache_created_tokens: created });
}

async function toolOrThink(cmd: Cmd, state: Gen, what: string, prompt: number, cached: number, created: number): Promise<void> {
  const id = cmd.id;
  const done = (finish_reason: string, completion_tokens: number): void => {
    out({ type: "done", id, finish_reason, stop_sequence: null, prompt_tokens: prompt, completion_tokens, cached_tokens: cached, cache_created_tokens: created });
  };
  await Bun.sleep(1);
  if (state.cancelled) return done("cancelled", 0);
  if (what === "think") {
    if (cmd.enable_thinking === true) {
      out({ type: "thinking", id, text: "Let me " });
      out({ type: "thinking", id, text: "think." });
    }
    out({ type: "delta", id, text: "Answer." });
    return done("stop", 6);
  }
  out({ type: "delta", id, text: "I will run it." });
  const call = (command: string): void => {
    // No call_id: the server mints tool_use ids (as the real worker leaves it to it).
    out({ type: "tool_call", id, name: "Bash", arguments: { command, description: "Print a marker" } });
  };
  call("echo pensieve-tool-ok");
  if (what === "tools2" && cmd.parallel_tool_calls !== false) call("echo second");
  done("tool_calls", 20);
}

let buf = "";
const decoder = new TextDecoder();
process.stdin.on("data", (chunk: Buffer) => {
  if (hung) return;
  buf += decoder.decode(chunk, { stream: true });
  for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    if (!line.trim()) continue;
    let cmd: Cmd;
    try {
      cmd = JSON.parse(line);
    } catch {
      out({ type: "error", id: null, code: "bad_request", message: "bad JSON" });
      continue;
    }
    handle(cmd);
  }
});
process.stdin.on("end", () => {
  if (!stubborn && !hung) process.exit(0);
});
