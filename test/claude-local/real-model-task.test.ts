/**
 * The real Claude Code CLI (pinned in package.json), through scripts/claude-local, completes a
 * task that needs a tool against Pensieve serving a real model on llama.cpp
 * (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, the PyPI-shipped GGUF of test/support/real-models.ts):
 * it writes a file with given content in a scratch project directory.
 *
 * To keep the prompt short enough for a CPU, the session offers only the Write tool (--tools)
 * and replaces Claude Code's long system prompt (--system-prompt); writes are allowed without a
 * prompt (--allowedTools Write, --permission-mode acceptEdits). Everything else is Claude Code as
 * it ships: its request shape, its tool loop, its tool_result turn.
 *
 * Known product bug this test catches (open): Claude Code 2.1.332 sends its "# Environment"
 * section as a system-role message after the user's prompt; for Qwen2.5, whose template renders
 * a mid-conversation system message natively, Pensieve renders it as the last turn before the
 * assistant's, and the 1.5B then answers that text ("Done", "OK.", "There is no error.") instead
 * of calling Write, in most runs. With the same request and that message before the prompt (or
 * without it) the 1.5B calls Write with the right path and content every time. A second one
 * shows up in some runs: Claude Code's DeferredToolPlaceholder (defer_loading: true, "never call
 * this tool") is rendered into the prompt as a callable tool, and the model calls it.
 *
 * A recording proxy sits between claude and Pensieve (what was asked and answered, for the
 * assertions and for a readable failure); a trap proxy (HTTPS_PROXY) catches any attempt to
 * leave loopback. Skipped only with PENSIEVE_REAL_MODELS=0.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLAUDE_LOCAL, claudeSandbox, fromClaude, isMessagesCall, runCli } from "../support/claude-cli";
import { REAL_MODELS, realModel } from "../support/real-models";
import { startRecorder, startTrap, type Recorder, type Trap } from "../support/recording-proxy";
import { type RunningServer, startServer } from "../support/server-process";

const PENSIEVE_TOKEN = "pensieve-test-token";
const MODEL_KEY = "1.5b" as const;
const CONTENT = "pensieve works";
const PROMPT = `Create a file named hello.txt containing exactly: ${CONTENT}`;
const START_TIMEOUT_MS = 300_000;
// The whole claude run; the test's own timeout adds a margin for the checks.
const RUN_TIMEOUT_MS = 420_000;

let work: string;
let pensieve: RunningServer | undefined;
let recorder: Recorder | undefined;
let trap: Trap | undefined;

describe.skipIf(!REAL_MODELS)(`Claude Code on ${MODEL_KEY} (llama.cpp)`, () => {
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "claude-local-task-"));
    pensieve = await startServer({
      // Claude Code sends no temperature and this GGUF names none, so it would sample at 1 and
      // now and then answer in prose instead of calling Write: greedy, as a user of a small model would set.
      args: ["--model", await realModel(MODEL_KEY), "--engine", "llama", "--token", PENSIEVE_TOKEN, "--temperature", "0"],
      timeoutMs: START_TIMEOUT_MS,
    });
    recorder = startRecorder(pensieve.url);
    trap = startTrap();
  }, START_TIMEOUT_MS + 60_000);

  afterAll(async () => {
    await recorder?.stop();
    trap?.stop();
    await pensieve?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test("claude-local -p 'Create a file named hello.txt …' writes the file with that content", async () => {
    if (!pensieve || !recorder || !trap) throw new Error("setup failed");
    const { cwd, env } = claudeSandbox(work, trap.url, { PENSIEVE_PORT: String(recorder.port), PENSIEVE_TOKEN });
    const system =
      "You are a coding assistant that completes tasks by calling tools. " +
      `The current working directory is ${cwd}. Write files with the Write tool, using absolute paths. ` +
      "When the task is done, reply with one short sentence.";
    const started = performance.now();
    const run = await runCli(
      [
        CLAUDE_LOCAL,
        "-p",
        PROMPT,
        "--tools",
        "Write",
        "--allowedTools",
        "Write",
        "--permission-mode",
        "acceptEdits",
        "--system-prompt",
        system,
        "--max-turns",
        "4",
        "--strict-mcp-config",
        "--no-session-persistence",
      ],
      env,
      cwd,
      RUN_TIMEOUT_MS,
    );
    const seconds = (performance.now() - started) / 1000;

    const calls = recorder.exchanges.filter((x) => fromClaude(x) && isMessagesCall(x));
    const transcript = (
      await Promise.all(
        calls.map(async (x, i) => {
          const body = x.body as { messages?: unknown[]; tools?: { name: string }[] };
          return `#${i + 1} ${x.status} ${body.messages?.length ?? 0} messages, tools ${JSON.stringify(body.tools?.map((t) => t.name))}\n${(await x.response).slice(0, 3000)}`;
        }),
      )
    ).join("\n");
    const diagnosis = `after ${seconds.toFixed(0)} s, exit ${run.code}\nstdout: ${run.stdout}\nstderr: ${run.stderr.slice(-2000)}\n${transcript}\nserver:\n${pensieve.output().slice(-3000)}`;
    console.log(`claude-local task on ${MODEL_KEY}: ${seconds.toFixed(1)} s, ${calls.length} model call(s), exit ${run.code}`);

    const file = join(cwd, "hello.txt");
    if (!existsSync(file)) throw new Error(`hello.txt was not written\n${diagnosis}`);
    expect(readFileSync(file, "utf8").trim()).toBe(CONTENT);
    // Claude Code ended the session itself, after the model's final answer.
    if (run.code !== 0) throw new Error(`claude-local exited ${run.code}\n${diagnosis}`);
    // Claude Code asked with the Write tool only, and every call was answered.
    expect(calls.length).toBeGreaterThanOrEqual(2);
    // (Claude Code adds a DeferredToolPlaceholder, marked defer_loading, that is never called.)
    for (const x of calls) {
      const tools = (x.body as { tools?: { name: string; defer_loading?: boolean }[] }).tools ?? [];
      expect(tools.filter((t) => !t.defer_loading).map((t) => t.name)).toEqual(["Write"]);
    }
    expect(calls.filter((x) => x.status !== 200).map((x) => `${x.path} -> ${x.status}`)).toEqual([]);
    // Nothing tried to leave loopback.
    expect(trap.seen).toEqual([]);
  }, RUN_TIMEOUT_MS + 30_000);
});
