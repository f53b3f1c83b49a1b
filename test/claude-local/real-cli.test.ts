/**
 * The real Claude Code CLI (node_modules/.bin/claude) in two "terminals" at once:
 *  A: scripts/claude-local -p "hello" against a real Pensieve serving the tiny model;
 *  B: a plain claude -p whose ANTHROPIC_BASE_URL points at a stand-in.
 * A recording proxy sits between A's claude and Pensieve, so the test knows exactly which text
 * the server generated (the random model's output cannot be predicted) and what A sent.
 * A trap proxy (HTTPS_PROXY) catches any attempt to leave loopback.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startAnthropicStandin, type AnthropicStandin, type RecordedRequest } from "../support/anthropic-standin";
import { CLAUDE_LOCAL, claudeSandbox, fromClaude, isMessagesCall, runCli, sseText } from "../support/claude-cli";
import { startRecorder, startTrap, type Recorder, type Trap } from "../support/recording-proxy";
import { startServer, tinyModelDir, type RunningServer } from "../support/server-process";

const PENSIEVE_TOKEN = "pensieve-test-token";
const B_KEY = "sk-ant-terminal-b-key";
const B_ANSWER = "Terminal B's answer, from the stand-in.";
const RUN_TIMEOUT_MS = 180_000;

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
}

const authOf = (h: Record<string, string>) => [h["x-api-key"], h.authorization?.replace(/^Bearer /, "")].filter((v) => v !== undefined);

let work: string;
let pensieve: RunningServer | undefined;
let recorder: Recorder | undefined;
let standinB: AnthropicStandin | undefined;
let trap: Trap | undefined;

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
  trap?.stop();
  await pensieve?.stop();
  rmSync(work, { recursive: true, force: true });
});

test("terminal A gets Pensieve's answer through claude-local while terminal B, at the same time, gets its own server's", async () => {
  if (!pensieve || !recorder || !standinB || !trap) throw new Error("setup failed");
  // One user, one temp HOME, one shell environment whose global settings point at "their" API (B).
  const { cwd, env: shell } = claudeSandbox(work, trap.url, { ANTHROPIC_BASE_URL: standinB.url, ANTHROPIC_API_KEY: B_KEY });
  // No CLAUDE_CODE_MAX_OUTPUT_TOKENS cap: on a "max_tokens" stop Claude Code asks the model to
  // resume, up to 3 times, then exits 1. The tiny model ends on its own (EOS) after ~600 tokens on average.
  const envA = { ...shell, PENSIEVE_PORT: String(recorder.port), PENSIEVE_TOKEN };

  const [a, b] = await Promise.all([
    runCli([CLAUDE_LOCAL, "-p", "hello"], envA, cwd, RUN_TIMEOUT_MS),
    runCli(["claude", "-p", "hello"], shell, cwd, RUN_TIMEOUT_MS),
  ]);

  // Terminal A: exit 0, and stdout is exactly the text Pensieve streamed.
  const toPensieve = recorder.exchanges;
  const messagesA = toPensieve.filter(isMessagesCall);
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
