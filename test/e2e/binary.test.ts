/**
 * The compiled binary (dist/pensieve), started from a temp directory far from the repository:
 * the CLI, serving the tiny model to the official SDK and to the replayed Claude Code request,
 * the demo model's banner, and `pensieve setup` (which installs mlx-lm from PyPI).
 */
import Anthropic from "@anthropic-ai/sdk";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { llamaLibDir } from "../../src/bridge/llama-lib";
import { llamaPins } from "../../src/bridge/llama-pins";
import { checkAnthropicStream, parseSse, type WireEvent } from "../support/sse";
import {
  cleanEnv,
  DEFAULT_TOKEN,
  loadCapturedRequest,
  REPO,
  replayCaptured,
  type RunningServer,
  startServer,
  testPython,
  tinyModelDir,
} from "../support/server-process";
import { sampled } from "../support/sampled";

setDefaultTimeout(300_000);

const BIN = join(REPO, "dist", "pensieve");
const MODEL = "claude-opus-5-5";
let work = "";

function newestMtime(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const f of new Bun.Glob("**/*").scanSync({ cwd: path, onlyFiles: true })) newest = Math.max(newest, statSync(join(path, f)).mtimeMs);
  return newest;
}

/** dist/pensieve exists and is newer than everything it is built from. */
function binaryIsFresh(): boolean {
  if (!existsSync(BIN)) return false;
  const inputs = ["src", "python_bridge", "scripts/build.ts", "package.json"].map((p) => newestMtime(join(REPO, p)));
  return Math.max(...inputs) < statSync(BIN).mtimeMs;
}

async function run(args: string[], opts: { env?: Record<string, string | undefined>; cwd?: string } = {}) {
  const proc = Bun.spawn([BIN, ...args], {
    cwd: opts.cwd ?? work,
    env: cleanEnv({ ...process.env, ...opts.env }),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [code, stdout, stderr] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  return { code, stdout, stderr };
}

beforeAll(async () => {
  if (!binaryIsFresh()) {
    const proc = Bun.spawn([process.execPath, "run", "build"], { cwd: REPO, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
    const [code, err] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
    if (code !== 0) throw new Error(`bun run build failed (${code}):\n${err}`);
  }
  // Run from a directory with no repository around it: nothing may be found by relative path.
  work = mkdtempSync(join(tmpdir(), "pensieve-e2e-cwd-"));
}, 300_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("the CLI", () => {
  test("--version prints the package version", async () => {
    const r = await run(["--version"]);
    expect(r).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
  });

  test("--help shows the commands, the serve flags and how to point Claude Code at it", async () => {
    const r = await run(["--help"]);
    expect(r.code).toBe(0);
    for (const s of ["serve", "setup", "--help", "--version", "--host", "--port", "--model", "--token", "--python", "PENSIEVE_PORT", "ANTHROPIC_BASE_URL"])
      expect(r.stdout).toContain(s);
  });

  test("serve --help and setup --help exit 0 with help", async () => {
    for (const cmd of ["serve", "setup"]) {
      const r = await run([cmd, "--help"]);
      expect({ cmd, code: r.code, stderr: r.stderr }).toEqual({ cmd, code: 0, stderr: "" });
      expect(r.stdout).toContain("Usage");
    }
  });

  test("an unknown command or option is a usage error (exit 2)", async () => {
    const cmd = await run(["frobnicate"]);
    expect(cmd.code).toBe(2);
    expect(cmd.stderr).toContain("frobnicate");
    const opt = await run(["serve", "--no-such-flag"]);
    expect(opt.code).toBe(2);
    expect(opt.stderr).toContain("--no-such-flag");
  });

  test("the llama.cpp pins are inlined from package.json and bun.lock, and bun.lock itself is not", async () => {
    const bytes = Buffer.from(await Bun.file(BIN).arrayBuffer());
    const pins = llamaPins();
    for (const integrity of Object.values(pins.integrity)) expect(bytes.includes(integrity)).toBe(true);
    // A devDependency's integrity lives only in bun.lock.
    const lock = Bun.JSONC.parse(readFileSync(join(REPO, "bun.lock"), "utf8")) as { packages: Record<string, string[]> };
    const other = lock.packages.typescript?.[3];
    expect(other).toStartWith("sha512-");
    expect(bytes.includes(other as string)).toBe(false);
  });
});

describe("serve --model <tiny> from another directory", () => {
  let server: RunningServer;
  let client: Anthropic;

  beforeAll(async () => {
    server = await startServer({ command: [BIN], cwd: work, args: ["--python", testPython(), "--model", await tinyModelDir()] });
    client = new Anthropic({ baseURL: server.url, apiKey: DEFAULT_TOKEN, maxRetries: 0 });
  }, 180_000);

  afterAll(async () => {
    await server?.stop();
  });

  test("the startup line gives the URL, the model and the Claude Code settings", async () => {
    const h = (await (await fetch(`${server.url}/health`)).json()) as { status: string; model: string };
    expect(h.status).toBe("ok");
    expect(server.banner).toContain(`listening on ${server.url}`);
    expect(server.banner).toContain(h.model);
    expect(server.banner).toContain(`ANTHROPIC_BASE_URL=${server.url}`);
    expect(server.banner).toContain(`ANTHROPIC_API_KEY=${DEFAULT_TOKEN}`);
    expect(server.banner).not.toMatch(/random weights/i);
  });

  test("messages.create through the SDK", async () => {
    const m = await client.messages.create(sampled<Anthropic.MessageCreateParamsNonStreaming>({ model: MODEL, max_tokens: 8, temperature: 0, messages: [{ role: "user", content: "Hello from the binary test" }] }));
    expect(m).toMatchObject({ type: "message", role: "assistant", model: MODEL });
    expect(["end_turn", "max_tokens"]).toContain(m.stop_reason!);
    // Anthropic: input_tokens excludes cache reads and writes; the three sum to the prompt.
    expect(m.usage.input_tokens + (m.usage.cache_read_input_tokens ?? 0) + (m.usage.cache_creation_input_tokens ?? 0)).toBeGreaterThan(0);
  });

  test("messages.stream through the SDK: Anthropic's event order and a finalMessage", async () => {
    // Greedy: at the default temperature 1 the random-weight model can sample its end token first (no text).
    const stream = client.messages.stream(sampled<Anthropic.MessageStreamParams>({ model: MODEL, max_tokens: 8, temperature: 0, messages: [{ role: "user", content: "Stream from the binary test" }] }));
    const events: WireEvent[] = [];
    for await (const ev of stream) events.push({ event: ev.type, data: structuredClone(ev) as unknown as WireEvent["data"], raw: "" });
    const s = checkAnthropicStream(events);
    expect(s.names[0]).toBe("message_start");
    expect(s.names.slice(-2)).toEqual(["message_delta", "message_stop"]);
    expect(s.textDeltas).toBeGreaterThan(0);
    const final = await stream.finalMessage();
    expect(final.stop_reason).toBe(s.stopReason as Anthropic.StopReason);
    expect(final.usage.output_tokens).toBe(s.usage.output_tokens);
  });

  test("the Claude Code request, replayed as captured, streams valid SSE", async () => {
    const res = await replayCaptured(server.url, await loadCapturedRequest());
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const s = checkAnthropicStream(parseSse(await res.text()));
    expect(s.message.model).toBe(MODEL);
    expect(s.message.usage.input_tokens).toBeGreaterThan(1000);
    expect(["end_turn", "max_tokens", "tool_use"]).toContain(s.stopReason);
  });
});

describe("serve --model demo-tiny", () => {
  test("generates the demo model in PENSIEVE_HOME and says its weights are random", async () => {
    const home = mkdtempSync(join(tmpdir(), "pensieve-e2e-home-"));
    const server = await startServer({ command: [BIN], cwd: work, home, args: ["--python", testPython(), "--model", "demo-tiny"] });
    try {
      expect(server.banner).toContain(`listening on ${server.url}`);
      expect(server.banner).toMatch(/random weights/i);
      expect(server.banner).toContain(`ANTHROPIC_BASE_URL=${server.url}`);
      expect(existsSync(join(home, "models"))).toBe(true);
      const client = new Anthropic({ baseURL: server.url, apiKey: DEFAULT_TOKEN, maxRetries: 0 });
      const m = await client.messages.create({ model: MODEL, max_tokens: 4, messages: [{ role: "user", content: "demo" }] });
      expect(m.type).toBe("message");
    } finally {
      await server.stop();
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe("pensieve setup", () => {
  // Installs mlx-lm and the bridge's requirements from PyPI into a fresh venv (~40 s here).
  test("creates the bridge's venv in PENSIEVE_HOME, a second run is a no-op, and serve uses it", async () => {
    const home = mkdtempSync(join(tmpdir(), "pensieve-e2e-setup-"));
    // The llama.cpp libraries bun installed: setup finds them instead of fetching from npm (tested on loopback in test/unit/bridge).
    const llamaLibs = llamaLibDir({}, home) ?? undefined;
    try {
      const first = await run(["setup"], { env: { PENSIEVE_HOME: home, PENSIEVE_PYTHON: undefined, PENSIEVE_LLAMA_LIB_DIR: llamaLibs } });
      expect({ code: first.code, stderr: first.stderr.slice(-3000) }).toEqual({ code: 0, stderr: first.stderr.slice(-3000) });
      expect(first.stderr).toContain("[setup]");
      if (llamaLibs) expect(first.stderr).toContain(`[setup] llama.cpp libraries: ${llamaLibs}`);
      const venvPython = join(home, "venv", "bin", "python");
      expect(existsSync(venvPython)).toBe(true);

      const second = await run(["setup"], { env: { PENSIEVE_HOME: home, PENSIEVE_PYTHON: undefined, PENSIEVE_LLAMA_LIB_DIR: llamaLibs } });
      expect(second.code).toBe(0);
      expect(second.stderr).toContain("up to date");
      expect(second.stderr).not.toContain("installing");

      // No --python and no PENSIEVE_PYTHON: the binary must find setup's venv on its own.
      const server = await startServer({ command: [BIN], cwd: work, home, env: { PENSIEVE_PYTHON: undefined }, args: ["--model", await tinyModelDir()] });
      try {
        const client = new Anthropic({ baseURL: server.url, apiKey: DEFAULT_TOKEN, maxRetries: 0 });
        const m = await client.messages.create({ model: MODEL, max_tokens: 4, messages: [{ role: "user", content: "after setup" }] });
        expect(m.type).toBe("message");
      } finally {
        await server.stop();
      }
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  }, 300_000);
});
