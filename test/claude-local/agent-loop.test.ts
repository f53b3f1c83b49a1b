/**
 * The agent loop with the real Claude Code CLI (node_modules/.bin/claude) on Pensieve serving the
 * tool-calling fixture model, whose every turn is a Bash call running `echo pensieve-tool-ok`:
 *   claude -p "run the echo" --allowedTools "Bash(echo:*)" --max-turns 2
 * A recording proxy between claude and Pensieve shows that (1) the tool ran, (2) its result went
 * back as a tool_result, (3) Pensieve accepted that turn and answered with a valid stream.
 * A trap proxy (HTTPS_PROXY) catches any attempt to leave loopback.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { claudeSandbox, isMessagesCall, runCli } from "../support/claude-cli";
import { type Exchange, type Recorder, startRecorder, startTrap, type Trap } from "../support/recording-proxy";
import { type RunningServer, startServer } from "../support/server-process";
import { checkAnthropicStream, parseSse, type StreamSummary } from "../support/sse";
import { TOOL_CALL, TOOL_MARKER, toolModelDir } from "../support/tool-model";

const TOKEN = "pensieve-agent-token";
const RUN_TIMEOUT_MS = 240_000;

type Block = { type: string; [k: string]: unknown };
type Msg = { role: string; content: string | Block[] };

let work: string;
let pensieve: RunningServer | undefined;
let recorder: Recorder | undefined;
let trap: Trap | undefined;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "claude-agent-loop-"));
  pensieve = await startServer({ args: ["--model", await toolModelDir(), "--token", TOKEN] });
  recorder = startRecorder(pensieve.url);
  trap = startTrap();
}, 180_000);

afterAll(async () => {
  await recorder?.stop();
  trap?.stop();
  await pensieve?.stop();
  rmSync(work, { recursive: true, force: true });
});

const messagesOf = (x: Exchange) => ((x.body as { messages?: Msg[] })?.messages ?? []) as Msg[];
const blocks = (m: Msg): Block[] => (typeof m.content === "string" ? [{ type: "text", text: m.content }] : m.content);
const resultText = (b: Block): string =>
  typeof b.content === "string" ? b.content : ((b.content as Block[] | undefined) ?? []).map((c) => (c.type === "text" ? String(c.text) : "")).join("");

test("claude runs the model's Bash call, sends the tool_result back, and Pensieve serves that turn", async () => {
  if (!pensieve || !recorder || !trap) throw new Error("setup failed");
  const { cwd, env } = claudeSandbox(work, trap.url, { ANTHROPIC_BASE_URL: recorder.url, ANTHROPIC_API_KEY: TOKEN, ANTHROPIC_AUTH_TOKEN: TOKEN });

  const r = await runCli(["claude", "-p", "run the echo", "--allowedTools", "Bash(echo:*)", "--max-turns", "2"], env, cwd, RUN_TIMEOUT_MS);

  const turns = recorder.exchanges.filter(isMessagesCall);
  const detail = () => `claude exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}\nserver: ${pensieve?.output().slice(-2000)}`;
  if (turns.length < 2) throw new Error(`expected two model turns, saw ${turns.length}\n${detail()}`);

  // Turn 1: Pensieve streamed the fixture's Bash call.
  const summaries: StreamSummary[] = [];
  for (const x of turns) {
    expect(x.status).toBe(200);
    summaries.push(checkAnthropicStream(parseSse(await x.response)));
  }
  const callTurn = summaries.findIndex((s) => s.stopReason === "tool_use");
  expect(callTurn).toBeGreaterThanOrEqual(0);
  const use = (summaries[callTurn] as StreamSummary).blocks.find((b) => b.type === "tool_use");
  if (!use) throw new Error("no tool_use block");
  expect(use.start.name).toBe(TOOL_CALL.name);
  expect(JSON.parse(use.text)).toEqual(TOOL_CALL.input);
  const callId = use.start.id as string;
  expect(callId).toMatch(/^toolu_/);

  // (1) + (2): a later request carries the tool_result for that call, with the command's output.
  const answerIdx = turns.findIndex((x, i) => i > callTurn && messagesOf(x).some((m) => blocks(m).some((b) => b.type === "tool_result" && b.tool_use_id === callId)));
  if (answerIdx < 0) throw new Error(`no request carried the tool_result for ${callId}\n${detail()}`);
  const answer = turns[answerIdx] as Exchange;
  const history = messagesOf(answer);
  const echoed = history.flatMap(blocks).find((b) => b.type === "tool_result" && b.tool_use_id === callId) as Block;
  expect(echoed.is_error ?? false).toBe(false);
  expect(resultText(echoed)).toContain(TOOL_MARKER);
  // The assistant turn with the call is in the history, as Pensieve sent it.
  expect(history.flatMap(blocks).some((b) => b.type === "tool_use" && b.id === callId && b.name === TOOL_CALL.name)).toBe(true);

  // (3): Pensieve accepted that turn: 200, a complete valid stream (checked above), and it reused
  // the prompt prefix of the first turn.
  const served = summaries[answerIdx] as StreamSummary;
  expect(["tool_use", "end_turn"]).toContain(served.stopReason);
  expect(served.usage.cache_read_input_tokens).toBeGreaterThan(0);

  // Claude Code stops at --max-turns with exit 1 and says so; otherwise it must succeed.
  if (r.code !== 0) {
    expect(r.code).toBe(1);
    expect(`${r.stdout}${r.stderr}`).toMatch(/max turns/i);
  }
  // Every call Claude Code made was answered successfully, and nothing tried to leave loopback.
  expect(recorder.exchanges.filter((x) => x.status >= 400).map((x) => `${x.method} ${x.path} -> ${x.status}`)).toEqual([]);
  expect(trap.seen).toEqual([]);
}, 300_000);
