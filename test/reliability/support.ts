/**
 * Helpers for the reliability suite: real servers on the tiny model, an incremental SSE
 * reader, Anthropic error-shape checks, polling, and a spawn that leaves --host at its default.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, REPO, type RunningServer, startServer, testPython, tinyModelDir } from "../support/server-process";

export { REPO, type RunningServer, testPython, tinyModelDir };

/** The server's default token (`--token` unset). */
export const TOKEN = "pensieve-local-token";

/** A real `pensieve serve` on the tiny model, bound to 127.0.0.1 on an ephemeral port. */
export async function startTinyServer(args: string[] = [], env: Record<string, string | undefined> = {}): Promise<RunningServer> {
  const model = await tinyModelDir();
  return startServer({ args: ["--model", model, ...args], env, timeoutMs: 120_000 });
}

export interface SpawnedServer {
  url: string;
  port: number;
  proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  /** The startup line ("Pensieve ... listening on ..."). */
  startupLine: string;
  stdout(): string;
  stderr(): string;
  /** SIGTERM (then SIGKILL after 10 s) by pid if still running; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number>;
}

const spawned = new Set<Bun.Subprocess>();
// A run that dies mid-way must not leave servers behind: kill what is still ours, by pid.
process.on("exit", () => {
  for (const p of spawned) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
});

async function collect(stream: ReadableStream<Uint8Array>, add: (s: string) => void): Promise<void> {
  const dec = new TextDecoder();
  const reader = stream.getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) add(dec.decode(r.value, { stream: true }));
}

/**
 * Like startServer, but passes exactly `args` (so --host keeps its default) and keeps
 * stdout and stderr apart. PENSIEVE_HOST is removed from the environment.
 */
export async function spawnServer(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 120_000): Promise<SpawnedServer> {
  const home = mkdtempSync(join(tmpdir(), "pensieve-rel-home-"));
  const fullEnv: Record<string, string | undefined> = { ...process.env, PENSIEVE_HOME: home, PENSIEVE_PYTHON: testPython(), ...env };
  delete fullEnv.PENSIEVE_HOST;
  const proc = Bun.spawn([BUN, join(REPO, "src/main.ts"), "serve", "--port", "0", ...args], {
    cwd: REPO,
    env: Object.fromEntries(Object.entries(fullEnv).filter((e): e is [string, string] => e[1] !== undefined)),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  spawned.add(proc);
  let out = "";
  let err = "";
  const pumps = Promise.all([collect(proc.stdout, (s) => (out += s)), collect(proc.stderr, (s) => (err += s))]);
  let stopped: Promise<number> | undefined;
  const stop = (signal: NodeJS.Signals = "SIGTERM") =>
    (stopped ??= (async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill(signal);
        const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
        await proc.exited;
        clearTimeout(t);
      }
      await Promise.race([pumps, Bun.sleep(2000)]);
      spawned.delete(proc);
      rmSync(home, { recursive: true, force: true });
      return proc.exitCode ?? 128;
    })());

  let exited: number | null = null;
  void proc.exited.then((c) => (exited = c));
  const deadline = Date.now() + timeoutMs;
  let port = 0;
  let startupLine = "";
  while (Date.now() < deadline) {
    if (exited !== null) {
      await stop();
      throw new Error(`server exited early with code ${exited}:\n${out}\n${err}`);
    }
    const line = out.split("\n").find((l) => / listening on http:\/\//.test(l));
    if (line && !port) {
      startupLine = line;
      port = Number(/:(\d+)\b/.exec(line.slice(line.indexOf("listening on")))?.[1] ?? 0);
    }
    if (port) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) {
          return { url: `http://127.0.0.1:${port}`, port, proc, startupLine, stdout: () => out, stderr: () => err, stop };
        }
      } catch {
        // not accepting yet
      }
    }
    await Bun.sleep(100);
  }
  await stop("SIGKILL");
  throw new Error(`server did not become healthy in time:\n${out}\n${err}`);
}

// ---------------------------------------------------------------- HTTP

export function authHeaders(extra: Record<string, string> = {}): Record<string, string> {
  return { "x-api-key": TOKEN, "content-type": "application/json", ...extra };
}

export function postMessages(url: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(`${url}/v1/messages`, {
    method: "POST",
    headers: authHeaders(),
    body: JSON.stringify(body),
    ...init,
  });
}

/** A long greedy stream: the random model then never stops early on its own. */
export function longStreamBody(content = "Tell me a long story.", maxTokens = 4000, extra: Record<string, unknown> = {}) {
  return { model: "claude-sonnet-4-5", max_tokens: maxTokens, temperature: 0, stream: true, messages: [{ role: "user", content }], ...extra };
}

export function shortBody(extra: Record<string, unknown> = {}) {
  return { model: "claude-sonnet-4-5", max_tokens: 8, messages: [{ role: "user", content: "hi" }], ...extra };
}

export interface HealthBody {
  status: string;
  ready: boolean;
  engine: { state: string; queued?: number; running?: number; workerPid?: number | null; restarts?: number };
  memory?: Record<string, unknown>;
}

/** /health with the token: the engine's stats and pids are shown to token holders only. */
export async function health(url: string, token = TOKEN): Promise<HealthBody> {
  const res = await fetch(`${url}/health`, { headers: { "x-api-key": token } });
  return (await res.json()) as HealthBody;
}

// ---------------------------------------------------------------- SSE

export interface SseFrame {
  event: string;
  data: any;
}

/** Parses one `event:`/`data:` frame; data must be JSON. */
export function parseFrame(frame: string): SseFrame | null {
  let event = "";
  let data = "";
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trimStart();
  }
  if (!event && !data) return null;
  return { event, data: data ? JSON.parse(data) : null };
}

/** All frames of a complete SSE text. */
export function parseSseText(text: string): SseFrame[] {
  return text
    .replaceAll("\r\n", "\n")
    .split("\n\n")
    .map((f) => (f.trim() ? parseFrame(f) : null))
    .filter((f): f is SseFrame => f !== null);
}

/** Frames as they arrive; the caller may stop early (the reader is then cancelled). */
export async function* sseFrames(body: ReadableStream<Uint8Array>): AsyncGenerator<SseFrame> {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true }).replaceAll("\r\n", "\n");
      let cut: number;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const f = frame.trim() ? parseFrame(frame) : null;
        if (f) yield f;
      }
    }
    const f = buf.trim() ? parseFrame(buf) : null;
    if (f) yield f;
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** Text of every text_delta, in order. */
export function deltaText(frames: SseFrame[]): string {
  return frames
    .filter((f) => f.data?.type === "content_block_delta" && f.data.delta?.type === "text_delta")
    .map((f) => f.data.delta.text as string)
    .join("");
}

// ---------------------------------------------------------------- error shape

/** Problems with an Anthropic error response, or [] when it has the right shape. */
export function errorShapeProblems(status: number, headers: Headers, text: string): string[] {
  const problems: string[] = [];
  if (status < 400 || status > 599) problems.push(`status ${status} is not an error`);
  const ct = headers.get("content-type") ?? "";
  if (!ct.startsWith("application/json")) problems.push(`content-type ${JSON.stringify(ct)}`);
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    problems.push(`body is not JSON: ${JSON.stringify(text.slice(0, 120))}`);
    return problems;
  }
  if (body?.type !== "error") problems.push(`type ${JSON.stringify(body?.type)}`);
  if (typeof body?.error?.type !== "string" || !body.error.type) problems.push("error.type missing");
  if (typeof body?.error?.message !== "string" || !body.error.message) problems.push("error.message missing");
  if (typeof body?.request_id !== "string" || !body.request_id.startsWith("req_")) problems.push(`request_id ${JSON.stringify(body?.request_id)}`);
  else if (headers.get("request-id") !== body.request_id) problems.push("request-id header differs from body.request_id");
  return problems;
}

// ---------------------------------------------------------------- misc

/** Polls `fn` until it returns a truthy value; throws with `what` after `timeoutMs`. */
export async function waitFor<T>(fn: () => Promise<T> | T, what: string, timeoutMs = 30_000, intervalMs = 100): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${String(last)})`);
    await Bun.sleep(intervalMs);
  }
}

/** Rejects with a clear message when `p` takes longer than `ms` (a hang, not a slow answer). */
export function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`hang: ${what} did not finish within ${ms} ms`)), ms)));
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** True while `pid` exists and is not a zombie (Linux: reads /proc; elsewhere: signal 0). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true;
  }
}

/** Nearest-rank percentile of `values` (ms). */
export function percentile(values: number[], p: number): number {
  if (!values.length) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

/**
 * Linux only: TCP sockets from /proc/net/tcp{,6}: local/remote address and port, state, and
 * the kernel's send (tx) and receive (rx) queue sizes in bytes.
 */
export interface TcpEntry {
  local: string;
  localPort: number;
  remote: string;
  remotePort: number;
  state: string;
  txQueue: number;
  rxQueue: number;
}

export function tcpTable(): TcpEntry[] | null {
  const rows: TcpEntry[] = [];
  let any = false;
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
      any = true;
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 5) continue;
      const [local, remote, state, queues] = [cols[1]!, cols[2]!, cols[3]!, cols[4]!];
      const [la, lp] = local.split(":");
      const [ra, rp] = remote.split(":");
      const [tx, rx] = queues.split(":");
      rows.push({
        local: la!,
        localPort: Number.parseInt(lp!, 16),
        remote: ra!,
        remotePort: Number.parseInt(rp!, 16),
        state,
        txQueue: Number.parseInt(tx!, 16),
        rxQueue: Number.parseInt(rx!, 16),
      });
    }
  }
  return any ? rows : null;
}

/** /proc/net/tcp's hex for 127.0.0.1 (little-endian) and its IPv4-mapped IPv6 form. */
export const LOOPBACK_HEX = new Set(["0100007F", "0000000000000000FFFF00000100007F"]);

/** "request failed" log lines (5xx) other than the expected overload answers (503, 529). */
export function unexpectedServerErrors(output: string): string[] {
  return output.split("\n").filter((l) => l.includes("request failed") && !/"status":(503|529)\b/.test(l));
}
