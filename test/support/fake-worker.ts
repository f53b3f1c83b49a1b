/**
 * A fake model worker speaking python_bridge/PROTOCOL.md v1, run with the bun binary
 * in place of Python. Behaviour per generation comes from the last message's content:
 *   "slow…"     tokens every FAKE_WORKER_TOKEN_MS (default 20) ms up to max_tokens, honouring cancel
 *   "crash"     started, two deltas, a stderr line "simulated crash: boom", then exit 3
 *   "hang"      started, then ignores everything (stdin, cancel, shutdown)
 *   "garbage"   started, then a non-JSON line on stdout
 *   "too_long"  error prompt_too_long (5000 > 2048);  "bad" error bad_request;  "internal" error internal
 *   "utf8"      deltas with multi-byte characters
 *   anything else: a few tokens, then done.
 * Start-up behaviour from env: FAKE_WORKER_START=crash|silent, FAKE_WORKER_LOAD=fail,
 * FAKE_WORKER_STUBBORN=1 (ignores shutdown, EOF and SIGTERM), FAKE_WORKER_JOURNAL=file
 * (appends every received command as a JSON line).
 */

import { appendFileSync, writeSync } from "node:fs";

type Cmd = { v: number; id: string; cmd: string; [k: string]: unknown };
type Msg = { role: string; content: string };

const env = process.env;
const tokenMs = Number(env.FAKE_WORKER_TOKEN_MS ?? 20);
const stubborn = env.FAKE_WORKER_STUBBORN === "1";

// Synchronous writes: nothing may be lost when the process exits right after.
const out = (m: Record<string, unknown>) => writeSync(1, `${JSON.stringify({ v: 1, ...m })}\n`);
const log = (s: string) => writeSync(2, `${s}\n`);

let hung = false;
let loaded: string | null = null;
let current: { id: string; cancelled: boolean } | null = null;
const deferred: Cmd[] = [];

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

function handle(cmd: Cmd): void {
  if (env.FAKE_WORKER_JOURNAL) {
    appendFileSync(env.FAKE_WORKER_JOURNAL, `${JSON.stringify({ cmd: cmd.cmd, id: cmd.id, target: cmd.target })}\n`);
  }
  const id = cmd.id;
  switch (cmd.cmd) {
    case "cancel": {
      const found = current !== null && current.id === cmd.target && !current.cancelled;
      if (found && current) current.cancelled = true;
      return void out({ type: "cancelled", id, target: cmd.target, found });
    }
    case "stats":
      return void out({
        type: "stats",
        id,
        model: loaded,
        generating: current?.id ?? null,
        memory: { active_gb: 0.01, cache_gb: 0, peak_gb: 0.02, rss_gb: 0.05 },
      });
    case "count_tokens":
      return void out({ type: "count", id, input_tokens: promptTokens(cmd.messages as Msg[]) });
  }
  if (current) {
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
      });
    case "clear_cache":
      return void out({ type: "cleared", id, memory: { active_gb: 0.01, cache_gb: 0, peak_gb: 0.02 } });
    case "shutdown":
      out({ type: "bye", id });
      if (!stubborn) process.exit(0);
      return;
    case "generate":
      if (!loaded) return void out({ type: "error", id, code: "not_loaded", message: "no model" });
      current = { id, cancelled: false };
      void generate(cmd, current).finally(() => {
        current = null;
        while (!current && !hung && deferred.length) handle(deferred.shift() as Cmd);
      });
      return;
    default:
      out({ type: "error", id, code: "bad_request", message: `unknown command ${cmd.cmd}` });
  }
}

async function generate(cmd: Cmd, state: { id: string; cancelled: boolean }): Promise<void> {
  const id = cmd.id;
  const messages = cmd.messages as Msg[];
  const what = String(messages[messages.length - 1]?.content ?? "");
  const maxTokens = Number(cmd.max_tokens ?? 16);
  const prompt = promptTokens(messages);
  if (what === "too_long") {
    return void out({ type: "error", id, code: "prompt_too_long", message: "too long", prompt_tokens: 5000, max_context: 2048 });
  }
  if (what === "bad") return void out({ type: "error", id, code: "bad_request", message: "temperature out of range" });
  if (what === "internal") return void out({ type: "error", id, code: "internal", message: "metal exploded" });
  out({ type: "started", id, prompt_tokens: prompt, cached_tokens: 0 });
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
      log("simulated crash: boom");
      process.exit(3);
    }
  }
  const reason = state.cancelled ? "cancelled" : emitted >= maxTokens ? "length" : "stop";
  out({ type: "done", id, finish_reason: reason, stop_sequence: null, prompt_tokens: prompt, completion_tokens: emitted, cached_tokens: 0 });
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
