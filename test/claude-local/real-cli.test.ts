/**
 * The real Claude Code CLI (node_modules/.bin/claude) in two "terminals" at once:
 *  A: scripts/claude-local -p "hello" against a real Pensieve serving the tiny model;
 *  B: a plain claude -p whose ANTHROPIC_BASE_URL points at a stand-in.
 * A recording proxy sits between A's claude and Pensieve, so the test knows exactly which text
 * the server generated (the random model's output cannot be predicted) and what A sent.
 * A trap proxy (HTTPS_PROXY) catches any attempt to leave loopback.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startAnthropicStandin, type AnthropicStandin, type RecordedRequest } from "../support/anthropic-standin";
import { startServer, tinyModelDir, type RunningServer } from "../support/server-process";

const REPO = resolve(import.meta.dir, "../..");
const WRAPPER = join(REPO, "scripts/claude-local");
const CLAUDE_BIN_DIR = join(REPO, "node_modules/.bin");
const PENSIEVE_TOKEN = "pensieve-test-token";
const B_KEY = "sk-ant-terminal-b-key";
const B_ANSWER = "Terminal B's answer, from the stand-in.";
const RUN_TIMEOUT_MS = 180_000;

interface Exchange extends RecordedRequest {
  status: number;
  /** The response body as forwarded to the client (SSE or JSON), once it has ended. */
  response: Promise<string>;
}

interface Recorder {
  url: string;
  port: number;
  exchanges: Exchange[];
  stop(): Promise<void>;
}

const HOP_BY_HOP = ["connection", "keep-alive", "transfer-encoding", "host", "content-length"];

/** A loopback reverse proxy that forwards to `target` and keeps a copy of both directions. */
function startRecorder(target: string): Recorder {
  const exchanges: Exchange[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 255, // seconds: a prefill may be silent for a while between pings
    async fetch(req) {
      const url = new URL(req.url);
      const raw = req.method === "GET" || req.method === "HEAD" ? undefined : await req.text();
      const headers: Record<string, string> = {};
      req.headers.forEach((v, k) => { headers[k.toLowerCase()] = v; });
      const forward = new Headers(req.headers);
      for (const h of HOP_BY_HOP) forward.delete(h);
      forward.set("accept-encoding", "identity"); // keep the copy readable
      const upstream = await fetch(`${target}${url.pathname}${url.search}`, {
        method: req.method, headers: forward, body: raw, redirect: "manual",
      });
      let body: unknown = raw;
      try { body = raw ? JSON.parse(raw) : undefined; } catch { /* keep the text */ }
      const out = new Headers(upstream.headers);
      for (const h of [...HOP_BY_HOP, "content-encoding"]) out.delete(h);
      if (upstream.body === null) {
        exchanges.push({ method: req.method, path: url.pathname + url.search, headers, body, status: upstream.status, response: Promise.resolve("") });
        return new Response(null, { status: upstream.status, headers: out });
      }
      const [toClient, toLog] = upstream.body.tee();
      exchanges.push({
        method: req.method, path: url.pathname + url.search, headers, body,
        status: upstream.status, response: new Response(toLog).text(),
      });
      return new Response(toClient, { status: upstream.status, headers: out });
    },
  });
  const port = server.port ?? 0;
  return { url: `http://127.0.0.1:${port}`, port, exchanges, stop: () => server.stop(true) };
}

/** A proxy that refuses everything and remembers the first line (e.g. "CONNECT host:443"). */
function startTrap() {
  const seen: string[] = [];
  const listener = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(sock, data) {
        seen.push(data.toString("latin1").split("\r\n")[0] ?? "");
        sock.end();
      },
    },
  });
  return { url: `http://127.0.0.1:${listener.port}`, seen, stop: () => listener.stop(true) };
}

/** The concatenated text_delta of an Anthropic SSE body. */
function sseText(body: string): string {
  let text = "";
  for (const frame of body.split(/\r?\n\r?\n/)) {
    const data = frame.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
    if (data === "") continue;
    const ev = JSON.parse(data) as { type?: string; delta?: { type?: string; text?: string } };
    if (ev.type === "content_block_delta" && ev.delta?.type === "text_delta") text += ev.delta.text ?? "";
  }
  return text;
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
}

async function run(cmd: string[], env: Record<string, string>, cwd: string) {
  const proc = Bun.spawn(cmd, { env, cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), RUN_TIMEOUT_MS);
  try {
    const [stdout, stderr, code] = await Promise.all([
      new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited,
    ]);
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

const authOf = (h: Record<string, string>) => [h["x-api-key"], h.authorization?.replace(/^Bearer /, "")].filter((v) => v !== undefined);
const fromClaude = (r: RecordedRequest) => (r.headers["user-agent"] ?? "").startsWith("claude-cli/");

let work: string;
let pensieve: RunningServer | undefined;
let recorder: Recorder | undefined;
let standinB: AnthropicStandin | undefined;
let trap: ReturnType<typeof startTrap> | undefined;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "claude-local-real-"));
  pensieve = await startServer({ args: ["--model", await tinyModelDir(), "--token", PENSIEVE_TOKEN] });
  recorder = startRecorder(pensieve.url);
  trap = startTrap();
  // B's answer is held until A's request has reached Pensieve: both are provably in flight together.
  const rec = recorder;
  standinB = startAnthropicStandin({
    answer: B_ANSWER,
    beforeAnswer: () => waitFor(() => rec.exchanges.some((x) => x.method === "POST" && x.path.startsWith("/v1/messages")), 120_000, "terminal A's request"),
  });
}, 180_000);

afterAll(async () => {
  await standinB?.stop();
  await recorder?.stop();
  await trap?.stop();
  await pensieve?.stop();
  rmSync(work, { recursive: true, force: true });
});

test("terminal A gets Pensieve's answer through claude-local while terminal B, at the same time, gets its own server's", async () => {
  if (!pensieve || !recorder || !standinB || !trap) throw new Error("setup failed");
  // One user, one temp HOME, one shell environment whose global settings point at "their" API (B).
  const home = join(work, "home");
  const cwd = join(work, "project");
  mkdirSync(home);
  mkdirSync(cwd);
  const loopback = "127.0.0.1,localhost,::1";
  const shell: Record<string, string> = {
    PATH: `${CLAUDE_BIN_DIR}:${process.env.PATH ?? "/usr/bin:/bin"}`,
    HOME: home,
    LANG: "C.UTF-8",
    ANTHROPIC_BASE_URL: standinB.url,
    ANTHROPIC_API_KEY: B_KEY,
    // Keep Claude Code quiet and local; anything that still tries the internet hits the trap.
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
    DISABLE_TELEMETRY: "1",
    DISABLE_ERROR_REPORTING: "1",
    DISABLE_AUTOUPDATER: "1",
    CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL: "1",
    HTTPS_PROXY: trap.url, HTTP_PROXY: trap.url, https_proxy: trap.url, http_proxy: trap.url,
    NO_PROXY: loopback, no_proxy: loopback,
  };
  // No CLAUDE_CODE_MAX_OUTPUT_TOKENS cap: on a "max_tokens" stop Claude Code asks the model to
  // resume, up to 3 times, then exits 1. The tiny model ends on its own (EOS) after ~600 tokens on average.
  const envA = { ...shell, PENSIEVE_PORT: String(recorder.port), PENSIEVE_TOKEN };

  const [a, b] = await Promise.all([
    run([WRAPPER, "-p", "hello"], envA, cwd),
    run(["claude", "-p", "hello"], shell, cwd),
  ]);

  // Terminal A: exit 0, and stdout is exactly the text Pensieve streamed.
  const toPensieve = recorder.exchanges;
  const messagesA = toPensieve.filter((x) => x.method === "POST" && x.path.startsWith("/v1/messages") && !x.path.includes("count_tokens"));
  expect(messagesA.length).toBeGreaterThanOrEqual(1);
  const last = messagesA[messagesA.length - 1];
  if (!last) throw new Error("no /v1/messages call reached Pensieve");
  expect(last.status).toBe(200);
  const generated = sseText(await last.response);
  expect(generated.trim()).not.toBe("");
  if (a.code !== 0) throw new Error(`terminal A exited ${a.code}:\n${a.stderr}\n${pensieve.output().slice(-2000)}`);
  expect(a.stdout.trim()).toBe(generated.trim());
  expect(a.stderr).toContain("claude-local:");

  // Terminal B: exit 0 with the stand-in's answer, and no trace of the wrapper.
  if (b.code !== 0) throw new Error(`terminal B exited ${b.code}:\n${b.stderr}`);
  expect(b.stdout.trim()).toBe(B_ANSWER);
  expect(b.stderr).not.toContain("claude-local");

  // Pensieve saw the wrapper's /health and A's claude, with the Pensieve token only.
  const claudeToPensieve = toPensieve.filter(fromClaude);
  expect(toPensieve.filter((x) => !fromClaude(x)).map((x) => `${x.method} ${x.path}`)).toEqual(["GET /health"]);
  for (const x of claudeToPensieve) {
    expect(authOf(x.headers).length).toBeGreaterThan(0);
    expect(new Set(authOf(x.headers))).toEqual(new Set([PENSIEVE_TOKEN]));
  }

  // The stand-in saw only B's claude, with B's key; never the wrapper, never the Pensieve token.
  expect(standinB.requests.length).toBeGreaterThan(0);
  for (const r of standinB.requests) {
    expect(fromClaude(r)).toBe(true);
    expect(new Set(authOf(r.headers))).toEqual(new Set([B_KEY]));
  }
  const sessions = (rs: RecordedRequest[]) => new Set(rs.map((r) => r.headers["x-claude-code-session-id"]));
  const shared = [...sessions(claudeToPensieve)].filter((s) => sessions(standinB?.requests ?? []).has(s));
  expect(shared).toEqual([]);

  // Nothing tried to leave loopback (through the proxy Claude Code honours).
  expect(trap.seen).toEqual([]);

  // Every call Claude Code made was answered successfully.
  expect(claudeToPensieve.filter((x) => x.status >= 400).map((x) => `${x.method} ${x.path} -> ${x.status}`)).toEqual([]);
}, 300_000);
