/**
 * Issue 7's "Done when": the REAL Claude Code CLI (node_modules/.bin/claude), started by
 * scripts/claude-local, against Pensieve with `--backend openai` in front of a separate
 * OpenAI-compatible server (mlx_lm.server serving the tiny model). Real processes, loopback only:
 *
 *   claude ─▶ recorder A ─▶ Pensieve ─▶ recorder B ─▶ mlx_lm.server
 *
 * Recorder A shows what Claude Code asked and what Pensieve streamed back (the random model's
 * text cannot be predicted); recorder B shows the OpenAI chat completions Pensieve translated it
 * into. A trap proxy (HTTPS_PROXY) catches any attempt to leave loopback.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLAUDE_LOCAL, claudeSandbox, fromClaude, isMessagesCall, runCli, sseText } from "../support/claude-cli";
import { startMlxServer, type MlxServer } from "../support/mlx-server";
import { startRecorder, startTrap, type Recorder, type Trap } from "../support/recording-proxy";
import { startServer, tinyModelDir, type RunningServer } from "../support/server-process";

setDefaultTimeout(420_000);

const PENSIEVE_TOKEN = "pensieve-upstream-test-token";
const RUN_TIMEOUT_MS = 360_000;

/** The finish_reason values and the final usage of an OpenAI chat-completions SSE body. */
function openAIFinish(sse: string): { finish: string[]; usage?: { prompt_tokens: number; completion_tokens: number } } {
  const finish: string[] = [];
  let usage: { prompt_tokens: number; completion_tokens: number } | undefined;
  for (const line of sse.split("\n")) {
    const data = line.startsWith("data:") ? line.slice(5).trim() : "";
    if (data === "" || data === "[DONE]") continue;
    const j = JSON.parse(data) as { choices?: { finish_reason?: string | null }[]; usage?: typeof usage | null };
    for (const c of j.choices ?? []) if (c.finish_reason) finish.push(c.finish_reason);
    if (j.usage) usage = j.usage;
  }
  return { finish, ...(usage ? { usage } : {}) };
}

let work: string;
let mlx: MlxServer | undefined;
let toUpstream: Recorder | undefined;
let pensieve: RunningServer | undefined;
let toPensieve: Recorder | undefined;
let trap: Trap | undefined;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "claude-local-upstream-"));
  const modelDir = realpathSync(await tinyModelDir());
  // Claude Code sends no temperature, and mlx_lm.server's own default is 0 (greedy), on which
  // the random-weight tiny model never emits EOS; sampled at 1.0 it ends after a few hundred tokens.
  mlx = await startMlxServer(modelDir, { args: ["--temp", "1.0"] });
  toUpstream = startRecorder(mlx.url);
  pensieve = await startServer({ args: ["--backend", "openai", "--upstream", `${toUpstream.url}/v1`, "--token", PENSIEVE_TOKEN] });
  toPensieve = startRecorder(pensieve.url);
  trap = startTrap();
}, 240_000);

afterAll(async () => {
  await toPensieve?.stop();
  await pensieve?.stop();
  await toUpstream?.stop();
  await mlx?.stop();
  trap?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('scripts/claude-local -p "hello" works against Pensieve backed by mlx_lm.server', async () => {
  if (!mlx || !toUpstream || !pensieve || !toPensieve || !trap) throw new Error("setup failed");
  const { cwd, env } = claudeSandbox(work, trap.url, { PENSIEVE_PORT: String(toPensieve.port), PENSIEVE_TOKEN });

  const r = await runCli([CLAUDE_LOCAL, "-p", "hello"], env, cwd, RUN_TIMEOUT_MS);
  const diag = () =>
    `claude exited ${r.code}\n--- stderr\n${r.stderr}\n--- stdout\n${r.stdout}\n--- pensieve\n${pensieve!.output().slice(-3000)}\n--- mlx_lm.server\n${mlx!.output().slice(-1500)}`;
  if (r.code !== 0) throw new Error(diag());

  // Claude Code -> Pensieve: Anthropic Messages, all answered successfully.
  const claudeCalls = toPensieve.exchanges.filter(fromClaude);
  expect(claudeCalls.filter((x) => x.status >= 400).map((x) => `${x.method} ${x.path} -> ${x.status}`)).toEqual([]);
  const messages = claudeCalls.filter(isMessagesCall);
  expect(messages.length).toBeGreaterThanOrEqual(1);
  const last = messages.at(-1)!;
  const lastBody = last.body as { stream?: boolean; max_tokens?: number; tools?: unknown[]; messages: unknown[] };
  expect(lastBody.stream).toBe(true);
  expect((lastBody.tools ?? []).length).toBeGreaterThan(0);

  // stdout is exactly the text Pensieve streamed for Claude Code's last request.
  const generated = sseText(await last.response);
  expect(generated.trim()).not.toBe("");
  expect(r.stdout.trim()).toBe(generated.trim());
  expect(r.stderr).toContain("claude-local:");

  // Pensieve -> mlx_lm.server: one OpenAI chat completion per Messages call, translated.
  const chats = toUpstream.exchanges.filter((x) => x.method === "POST" && x.path === "/v1/chat/completions");
  expect(chats.length).toBe(messages.length);
  for (const c of chats) expect(c.status).toBe(200);
  const sent = chats.at(-1)!.body as {
    stream: boolean;
    max_tokens: number;
    messages: { role: string; content: unknown }[];
    tools?: { type: string; function: { name: string; parameters: unknown } }[];
  };
  expect(sent.stream).toBe(true);
  // Claude Code asks for 128000; Pensieve keeps it within the context it assumes for the upstream.
  expect(sent.max_tokens).toBeGreaterThan(0);
  expect(sent.max_tokens).toBeLessThanOrEqual(lastBody.max_tokens ?? Infinity);
  expect(sent.messages[0]?.role).toBe("system");
  const lastUser = sent.messages.filter((m) => m.role === "user").at(-1);
  expect(JSON.stringify(lastUser?.content)).toContain("hello");
  // Anthropic tools became OpenAI function tools, one for one; deferred ones stay out of context.
  const offered = (lastBody.tools ?? []).filter((t) => (t as { defer_loading?: boolean }).defer_loading !== true);
  expect(sent.tools?.length).toBe(offered.length);
  for (const t of sent.tools ?? []) {
    expect(t.type).toBe("function");
    expect(typeof t.function.name).toBe("string");
    expect(typeof t.function.parameters).toBe("object");
  }
  // The upstream ended the turn itself, and its usage is what Claude Code was told. When the
  // random model emits a tool-call token, mlx_lm.server says "tool_calls" without any call (it
  // drops what it cannot parse): with no valid call, Pensieve reports a plain end_turn.
  const up = openAIFinish(await chats.at(-1)!.response);
  expect(up.finish).toHaveLength(1);
  expect(["stop", "tool_calls"]).toContain(up.finish[0]!);
  const final = (await last.response).split("\n").filter((l) => l.startsWith("data:") && l.includes('"message_delta"'));
  expect(final).toHaveLength(1);
  const delta = JSON.parse(final[0]!.slice(5)) as { delta: { stop_reason: string }; usage: { output_tokens: number } };
  expect(delta.delta.stop_reason).toBe("end_turn");
  expect(delta.usage.output_tokens).toBe(up.usage?.completion_tokens ?? -1);

  // Pensieve's /health (seen by the wrapper) said which upstream it serves from.
  const h = (await (await fetch(`${pensieve.url}/health`, { headers: { "x-api-key": PENSIEVE_TOKEN } })).json()) as { status: string; engine: { upstream: { url: string; reachable: boolean }[] } };
  expect(h.status).toBe("ok");
  expect(h.engine.upstream[0]).toMatchObject({ url: toUpstream.url, reachable: true });

  // Nothing tried to leave loopback.
  expect(trap.seen).toEqual([]);
});
