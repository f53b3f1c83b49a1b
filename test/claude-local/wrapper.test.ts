/**
 * scripts/claude-local with a fake `claude` first on PATH and a stand-in /health server.
 * The fake records its argv and environment; nothing here needs a model or the network.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startAnthropicStandin, type AnthropicStandin } from "../support/anthropic-standin";

const REPO = resolve(import.meta.dir, "../..");
const WRAPPER = join(REPO, "scripts/claude-local");
const FAKE = join(REPO, "test/support/fake-claude.sh");
const RUN_TIMEOUT_MS = 30_000;

/** Keys that bash itself sets or updates in every process it runs. */
const SHELL_KEYS = new Set(["SHLVL", "PWD", "OLDPWD", "_"]);

let root: string;
let fakeBin: string;
let server: AnthropicStandin;
let runCount = 0;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** What the fake claude recorded, or null when it never ran. */
  argv: string[] | null;
  env: Record<string, string> | null;
}

function parseNul(path: string): string[] | null {
  if (!existsSync(path)) return null;
  const raw = readFileSync(path, "utf8");
  return raw === "" ? [] : raw.slice(0, -1).split("\0");
}

function parseEnv(path: string): Record<string, string> | null {
  const entries = parseNul(path);
  if (entries === null) return null;
  const env: Record<string, string> = {};
  for (const e of entries) {
    const i = e.indexOf("=");
    env[e.slice(0, i)] = e.slice(i + 1);
  }
  return env;
}

/** A temp dir holding `claude` (the fake) plus, optionally, links to a few real tools. */
function makeBin(name: string, opts: { claude: boolean; tools?: string[] }): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  if (opts.claude) {
    // A tiny launcher, so the test does not depend on the repo file's exec bit.
    writeFileSync(join(dir, "claude"), `#!/usr/bin/env bash\nexec bash '${FAKE}' "$@"\n`, { mode: 0o755 });
  }
  for (const tool of opts.tools ?? []) {
    const found = Bun.which(tool);
    if (found === null) throw new Error(`test needs ${tool} on PATH`);
    symlinkSync(found, join(dir, tool));
  }
  return dir;
}

/** The environment a user's shell would hand to the wrapper: minimal and explicit. */
function baseEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = {
    PATH: `${fakeBin}:${process.env.PATH ?? "/usr/bin:/bin"}`,
    HOME: join(root, "home-default"),
    LANG: "C.UTF-8",
    PENSIEVE_PORT: String(server.port),
  };
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

async function waitOrKill(proc: Bun.Subprocess, what: string): Promise<number> {
  const timer = setTimeout(() => proc.kill("SIGKILL"), RUN_TIMEOUT_MS);
  try {
    const code = await proc.exited;
    if (proc.signalCode === "SIGKILL") throw new Error(`${what} did not finish in ${RUN_TIMEOUT_MS} ms`);
    return code;
  } finally {
    clearTimeout(timer);
  }
}

async function runWrapper(args: string[], env: Record<string, string>, cwd?: string): Promise<Run> {
  runCount += 1;
  const rec = join(root, `rec-${runCount}`);
  const proc = Bun.spawn([WRAPPER, ...args], {
    env: { FAKE_CLAUDE_RECORD: rec, ...env },
    cwd: cwd ?? root,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    waitOrKill(proc, "claude-local"),
  ]);
  return { code, stdout, stderr, argv: parseNul(`${rec}.argv`), env: parseEnv(`${rec}.env`) };
}

/** The settings the wrapper passes as claude's first argument, `--settings '<json>'`. */
interface WrapperSettings {
  env: Record<string, string>;
  apiKeyHelper?: string;
  [key: string]: unknown;
}

/** The --settings claude got (exactly one, first), parsed as Claude Code does (last duplicate key wins). */
function settingsOf(r: Run): WrapperSettings {
  if (r.argv === null) throw new Error(`claude never ran: ${r.stderr}`);
  expect(r.argv[0]).toBe("--settings");
  expect(r.argv.slice(2).some((a) => a === "--settings" || a.startsWith("--settings="))).toBe(false);
  return JSON.parse(r.argv[1] ?? "") as WrapperSettings;
}

/** What claude got after the wrapper's --settings: the user's own arguments. */
function userArgs(r: Run): string[] {
  settingsOf(r);
  return (r.argv ?? []).slice(2);
}

/** Variables that pick a cloud provider instead of ANTHROPIC_BASE_URL in Claude Code 2.1.332. */
const PROVIDER_SWITCHES = [
  "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY", "CLAUDE_CODE_USE_ANTHROPIC_AWS",
  "CLAUDE_CODE_USE_ANTHROPIC_GOOGLE_CLOUD", "CLAUDE_CODE_USE_MANTLE", "CLAUDE_CODE_USE_GATEWAY",
];

/** Every file under dir with its bytes, for before/after comparison. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(p, readFileSync(p).toString("base64"));
    }
  };
  walk(dir);
  return out;
}

async function closedPort(): Promise<number> {
  const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("x") });
  const port = s.port ?? 0;
  await s.stop(true);
  return port;
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "claude-local-test-"));
  mkdirSync(join(root, "home-default"));
  fakeBin = makeBin("bin", { claude: true });
  server = startAnthropicStandin({ health: { status: "ok", model: "tiny-demo", memory: { status: "safe", available_gb: 12 } } });
});

afterAll(async () => {
  await server.stop();
  rmSync(root, { recursive: true, force: true });
});

describe("claude-local with a fake claude", () => {
  test("exports the Pensieve endpoint, token and local defaults to claude", async () => {
    const r = await runWrapper(["-p", "hi"], baseEnv());
    expect(r.code).toBe(0);
    expect(r.env).not.toBeNull();
    const env = r.env ?? {};
    expect(env.ANTHROPIC_BASE_URL).toBe(`http://127.0.0.1:${server.port}`);
    expect(env.ANTHROPIC_API_KEY).toBe("pensieve-local-token");
    expect(env.CLAUDE_CODE_ATTRIBUTION_HEADER).toBe("0");
    expect(env.CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC).toBe("1");
    expect(Number(env.API_TIMEOUT_MS)).toBeGreaterThanOrEqual(600_000);
    // It checked the server first.
    expect(server.requests.some((q) => q.method === "GET" && q.path === "/health")).toBe(true);
  });

  test("honours PENSIEVE_HOST, PENSIEVE_PORT and PENSIEVE_TOKEN", async () => {
    const r = await runWrapper([], baseEnv({ PENSIEVE_HOST: "localhost", PENSIEVE_TOKEN: "my-own-token" }));
    expect(r.code).toBe(0);
    expect(r.env?.ANTHROPIC_BASE_URL).toBe(`http://localhost:${server.port}`);
    expect(r.env?.ANTHROPIC_API_KEY).toBe("my-own-token");
  });

  test("the variables reach the child only: a concurrent terminal B keeps its own environment", async () => {
    // The user's shell environment, shared by both terminals.
    const shared = baseEnv({ ANTHROPIC_API_KEY: "sk-ant-real-user-key", ANTHROPIC_BASE_URL: "https://api.anthropic.com" });
    const recA = join(root, "terminal-a");
    const recB = join(root, "terminal-b");
    // Each side records its environment, then waits for the other's record: both succeed only
    // if the two processes were alive at the same time.
    const procA = Bun.spawn([WRAPPER, "-p", "hello"], {
      env: { ...shared, FAKE_CLAUDE_RECORD: recA, FAKE_CLAUDE_WAIT_FOR: `${recB}.env` },
      cwd: root, stdin: "ignore", stdout: "pipe", stderr: "pipe",
    });
    const procB = Bun.spawn(["bash", FAKE], {
      env: { ...shared, FAKE_CLAUDE_RECORD: recB, FAKE_CLAUDE_WAIT_FOR: `${recA}.env` },
      cwd: root, stdin: "ignore", stdout: "pipe", stderr: "pipe",
    });
    const [codeA, codeB, errA, errB] = await Promise.all([
      waitOrKill(procA, "terminal A"),
      waitOrKill(procB, "terminal B"),
      new Response(procA.stderr).text(),
      new Response(procB.stderr).text(),
    ]);
    if (codeA !== 0) throw new Error(`terminal A exited ${codeA}: ${errA}`);
    if (codeB !== 0) throw new Error(`terminal B exited ${codeB}: ${errB}`);

    const envA = parseEnv(`${recA}.env`) ?? {};
    const envB = parseEnv(`${recB}.env`) ?? {};
    expect(envA.ANTHROPIC_BASE_URL).toBe(`http://127.0.0.1:${server.port}`);
    expect(envA.ANTHROPIC_API_KEY).toBe("pensieve-local-token");

    // Terminal B sees exactly what its shell gave it: nothing added, removed or changed.
    const expectedB = { ...shared, FAKE_CLAUDE_RECORD: recB, FAKE_CLAUDE_WAIT_FOR: `${recA}.env` };
    const seenB = Object.fromEntries(Object.entries(envB).filter(([k]) => !SHELL_KEYS.has(k)));
    expect(seenB).toEqual(expectedB);
    // And the test runner's own environment (the "parent shell") is untouched too.
    expect(process.env.ANTHROPIC_BASE_URL).not.toBe(envA.ANTHROPIC_BASE_URL);
   }, 60_000); // the fake waits up to ~20 s for its peer; a failed rendezvous must report, not time out

  test("the user's ANTHROPIC_AUTH_TOKEN and OAuth token never reach claude", async () => {
    const r = await runWrapper([], baseEnv({
      ANTHROPIC_AUTH_TOKEN: "sk-ant-user-secret-auth",
      CLAUDE_CODE_OAUTH_TOKEN: "sk-ant-oat01-user-secret-oauth",
      ANTHROPIC_API_KEY: "sk-ant-user-secret-key",
    }));
    expect(r.code).toBe(0);
    const env = r.env ?? {};
    // Replaced by the Pensieve token: it outranks a saved claude.ai login in Claude Code.
    expect(env.ANTHROPIC_AUTH_TOKEN).toBe("pensieve-local-token");
    expect(env.ANTHROPIC_API_KEY).toBe("pensieve-local-token");
    expect("CLAUDE_CODE_OAUTH_TOKEN" in env).toBe(false);
    const leaked = Object.entries(env).filter(([, v]) => v.includes("user-secret"));
    expect(leaked).toEqual([]);
  });

  test("values the user set are respected", async () => {
    const r = await runWrapper([], baseEnv({
      CLAUDE_CODE_ATTRIBUTION_HEADER: "1",
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "0",
      API_TIMEOUT_MS: "1234",
    }));
    expect(r.code).toBe(0);
    expect(r.env?.CLAUDE_CODE_ATTRIBUTION_HEADER).toBe("1");
    expect(r.env?.CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC).toBe("0");
    expect(r.env?.API_TIMEOUT_MS).toBe("1234");
  });

  test("writes no file: ~/.claude/settings.json is byte-identical, HOME and cwd unchanged", async () => {
    const home = join(root, "home-settings");
    const cwd = join(root, "cwd-settings");
    mkdirSync(join(home, ".claude"), { recursive: true });
    mkdirSync(cwd);
    const settings = Buffer.concat([
      Buffer.from('{\n  "env": { "ANTHROPIC_BASE_URL": "https://api.anthropic.com" },\n  "model": "opus"\n}'),
      Buffer.from([0x0a, 0xe2, 0x9c, 0x93, 0x20, 0x0a]), // odd trailing bytes must survive too
    ]);
    writeFileSync(join(home, ".claude", "settings.json"), settings);
    writeFileSync(join(home, ".claude.json"), '{"hasCompletedOnboarding":true}');
    const beforeHome = snapshot(home);

    const r = await runWrapper(["-p", "hi"], baseEnv({ HOME: home }), cwd);
    expect(r.code).toBe(0);
    expect(r.env?.HOME).toBe(home);
    // The settings' own ANTHROPIC_BASE_URL loses to the wrapper's, passed in --settings.
    expect(settingsOf(r).env.ANTHROPIC_BASE_URL).toBe(`http://127.0.0.1:${server.port}`);
    expect(readFileSync(join(home, ".claude", "settings.json")).equals(settings)).toBe(true);
    expect(snapshot(home)).toEqual(beforeHome);
    expect(readdirSync(cwd)).toEqual([]);
  });

  test("passes its endpoint and token in --settings too, with the user's headers, key helper and cloud providers switched off", async () => {
    const r = await runWrapper(["-p", "hi"], baseEnv({
      ANTHROPIC_CUSTOM_HEADERS: "X-Proxy-Auth: user-secret-header",
      CLAUDE_CODE_USE_BEDROCK: "1",
      CLAUDE_CODE_USE_VERTEX: "1",
    }));
    expect(r.code).toBe(0);
    const settings = settingsOf(r);
    const off = Object.fromEntries(["CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS", ...PROVIDER_SWITCHES].map((k) => [k, ""]));
    expect(settings).toEqual({
      env: {
        ANTHROPIC_BASE_URL: `http://127.0.0.1:${server.port}`,
        ANTHROPIC_API_KEY: "pensieve-local-token",
        ANTHROPIC_AUTH_TOKEN: "pensieve-local-token",
        ...off,
      },
      apiKeyHelper: "",
    });
    expect(userArgs(r)).toEqual(["-p", "hi"]);
    // And out of the environment, for claude and whatever it starts.
    const env = r.env ?? {};
    expect("ANTHROPIC_CUSTOM_HEADERS" in env).toBe(false);
    for (const k of PROVIDER_SWITCHES) expect(k in env).toBe(false);
  });

  test("a token and host with JSON-special characters arrive intact in --settings", async () => {
    const token = 'tok"en\\with\tspecials\u0001✓';
    const r = await runWrapper([], baseEnv({ PENSIEVE_TOKEN: token, PENSIEVE_HOST: "localhost" }));
    expect(r.code).toBe(0);
    const { env } = settingsOf(r);
    expect(env.ANTHROPIC_AUTH_TOKEN).toBe(token);
    expect(env.ANTHROPIC_API_KEY).toBe(token);
    expect(env.ANTHROPIC_BASE_URL).toBe(`http://localhost:${server.port}`);
    expect(r.env?.ANTHROPIC_AUTH_TOKEN).toBe(token);
  });

  test("merges the user's --settings file into its own: their settings kept, its env keys win, the file untouched", async () => {
    const file = join(root, "user-flag-settings.json");
    const bytes = Buffer.from(`{
  "model": "opus",
  "permissions": { "allow": ["Bash(npm run test:*)"], "deny": ["Read(./.env)"] },
  "env": { "FOO": "bar ✓", "ANTHROPIC_BASE_URL": "https://proxy.example", "ANTHROPIC_AUTH_TOKEN": "user-secret" },
  "apiKeyHelper": "/usr/local/bin/user-secret-helper",
  "hooks": { "Stop": [{ "hooks": [{ "type": "command", "command": "echo \\"}{ env\\"" }] }] }
}
`);
    writeFileSync(file, bytes);
    const r = await runWrapper(["-p", "--settings", file, "hi"], baseEnv());
    expect(r.code).toBe(0);
    expect(userArgs(r)).toEqual(["-p", "hi"]);
    const settings = settingsOf(r);
    expect(settings.model).toBe("opus");
    expect(settings.permissions).toEqual({ allow: ["Bash(npm run test:*)"], deny: ["Read(./.env)"] });
    expect(settings.hooks).toEqual({ Stop: [{ hooks: [{ type: "command", command: 'echo "}{ env"' }] }] });
    expect(settings.env.FOO).toBe("bar ✓");
    expect(settings.env.ANTHROPIC_BASE_URL).toBe(`http://127.0.0.1:${server.port}`);
    expect(settings.env.ANTHROPIC_AUTH_TOKEN).toBe("pensieve-local-token");
    expect(settings.apiKeyHelper).toBe("");
    expect(readFileSync(file).equals(bytes)).toBe(true);
  });

  const inline = JSON.stringify({ model: "sonnet", env: { ANTHROPIC_API_KEY: "user-secret", BAR: "1" } });
  for (const [name, args] of [
    ["--settings JSON", ["--settings", inline, "-p", "hi"]],
    ["--settings=JSON", [`--settings=${inline}`, "-p", "hi"]],
    ["JSON with surrounding spaces", ["--settings", `  ${inline}\n`, "-p", "hi"]],
    ["two --settings (the last counts, as in Claude Code)", ["--settings", '{"model":"haiku"}', "-p", "--settings", inline, "hi"]],
  ] as const) {
    test(`merges inline settings: ${name}`, async () => {
      const r = await runWrapper([...args], baseEnv());
      expect(r.code).toBe(0);
      expect(userArgs(r)).toEqual(["-p", "hi"]);
      const settings = settingsOf(r);
      expect(settings.model).toBe("sonnet");
      expect(settings.env.BAR).toBe("1");
      expect(settings.env.ANTHROPIC_API_KEY).toBe("pensieve-local-token");
    });
  }

  test("after --, a --settings word is the user's argument and passes through", async () => {
    const r = await runWrapper(["-p", "--", "--settings", "{}", "--settings=x"], baseEnv());
    expect(r.code).toBe(0);
    expect(r.argv?.slice(2)).toEqual(["-p", "--", "--settings", "{}", "--settings=x"]);
    expect(JSON.parse(r.argv?.[1] ?? "").env.ANTHROPIC_AUTH_TOKEN).toBe("pensieve-local-token");
  });

  for (const [name, value] of [
    ["not JSON", "{ not json }"],
    ["an array", "[1]"],
    ["an object with an env that is not one", '{"env": "x"}'],
    ["an unterminated string", '{"model": "x}'],
    ["two objects", '{}{}'],
  ] as const) {
    test(`a user --settings that is ${name}: exit 2, claude not started`, async () => {
      const file = join(root, `bad-settings-${runCount}.json`);
      writeFileSync(file, value);
      for (const arg of [value, file]) {
        const r = await runWrapper(["--settings", arg, "-p", "hi"], baseEnv());
        if (arg === value && !value.startsWith("{")) {
          // Claude Code's rule: not {…}, so a file path, and there is no such file.
          expect(r.code).toBe(1);
        } else {
          expect(r.code).toBe(2);
        }
        expect(r.argv).toBeNull();
        expect(r.stderr).toContain("Claude Code was not started");
      }
    });
  }

  test("a missing --settings file: exit 1; a --settings without a value: exit 2; claude not started", async () => {
    const missing = await runWrapper(["--settings", join(root, "no-such-file.json"), "-p", "hi"], baseEnv());
    expect(missing.code).toBe(1);
    expect(missing.argv).toBeNull();
    expect(missing.stderr).toContain("no-such-file.json");
    const bare = await runWrapper(["-p", "hi", "--settings"], baseEnv());
    expect(bare.code).toBe(2);
    expect(bare.argv).toBeNull();
    expect(bare.stderr).toContain("--settings needs a value");
  });

  for (const code of [0, 3, 130]) {
    test(`claude's exit code ${code} becomes the wrapper's`, async () => {
      const r = await runWrapper(["-p", "hi"], baseEnv({ FAKE_CLAUDE_EXIT: String(code) }));
      expect(userArgs(r)).toEqual(["-p", "hi"]);
      expect(r.code).toBe(code);
    });
  }

  test("server down: exits 1 with how to start it, and never starts claude", async () => {
    const port = await closedPort();
    const r = await runWrapper(["-p", "hi"], baseEnv({ PENSIEVE_PORT: String(port) }));
    expect(r.code).toBe(1);
    expect(r.argv).toBeNull();
    expect(r.env).toBeNull();
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`127.0.0.1:${port}`);
    expect(r.stderr).toContain("npm start");
    expect(r.stderr).toContain("pensieve serve");
  });

  test("arguments with spaces, quotes and other shell metacharacters pass through intact", async () => {
    const args = [
      "-p", "hello world", `it's "quoted"`, "", "  padded  ", "$HOME `id` $(id)", "*", "a\nb",
      "--flag=x y", "back\\slash", "ünïcødé ✓", "-",
    ];
    const r = await runWrapper(args, baseEnv());
    expect(r.code).toBe(0);
    expect(userArgs(r)).toEqual(args);
  });

  test("banner goes to stderr; stdout carries claude's output only", async () => {
    const r = await runWrapper(["-p", "hi"], baseEnv({ FAKE_CLAUDE_STDOUT: "ANSWER FROM CLAUDE" }));
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("ANSWER FROM CLAUDE\n");
    expect(r.stderr).toContain("claude-local:");
    expect(r.stderr).toContain(`http://127.0.0.1:${server.port}`);
    expect(r.stderr).not.toContain("memory pressure");
  });
});

describe("claude-local memory pressure", () => {
  const cases: Array<{ name: string; opts: Parameters<typeof startAnthropicStandin>[0]; level: string }> = [
    { name: "memory.status in the /health body", level: "critical",
      opts: { health: { status: "ok", memory: { status: "critical", available_gb: 0.8 } } } },
    { name: "the X-Memory-Status header", level: "warning",
      opts: { health: { status: "ok" }, healthHeaders: { "x-memory-status": "warning", "x-available-memory-gb": "1.50" } } },
    { name: "a 503 /health under emergency", level: "emergency",
      opts: { healthStatus: 503, health: { status: "emergency", memory: { status: "emergency" } } } },
  ];
  for (const c of cases) {
    test(`says so from ${c.name}, and still starts claude`, async () => {
      const s = startAnthropicStandin(c.opts);
      try {
        const r = await runWrapper(["-p", "hi"], baseEnv({ PENSIEVE_PORT: String(s.port) }));
        expect(r.code).toBe(0);
        expect(userArgs(r)).toEqual(["-p", "hi"]);
        expect(r.stdout).toBe("");
        expect(r.stderr).toContain("memory pressure");
        expect(r.stderr).toContain(c.level);
      } finally {
        await s.stop();
      }
    });
  }
});

describe("claude-local without curl", () => {
  // Only what the wrapper needs besides bash builtins; no curl, so /dev/tcp is used.
  const tools = ["bash", "env", "tr", "dirname"];

  test("checks /health over bash's /dev/tcp and starts claude", async () => {
    const bin = makeBin("bin-nocurl", { claude: true, tools });
    const before = server.requests.length;
    const r = await runWrapper(["-p", "hi"], baseEnv({ PATH: bin }));
    expect(r.stderr).not.toContain("not answering");
    expect(r.code).toBe(0);
    expect(userArgs(r)).toEqual(["-p", "hi"]);
    expect(server.requests.slice(before).map((q) => `${q.method} ${q.path}`)).toEqual(["GET /health"]);
  });

  test("server down: exits 1 and never starts claude", async () => {
    const bin = makeBin("bin-nocurl-down", { claude: true, tools });
    const r = await runWrapper(["-p", "hi"], baseEnv({ PATH: bin, PENSIEVE_PORT: String(await closedPort()) }));
    expect(r.code).toBe(1);
    expect(r.argv).toBeNull();
    expect(r.stderr).toContain("not answering");
  });
});

test("claude missing from PATH: a clear message, exit 127", async () => {
  const bin = makeBin("bin-noclaude", { claude: false, tools: ["bash", "env", "tr", "dirname", "curl"] });
  const r = await runWrapper(["-p", "hi"], baseEnv({ PATH: bin }));
  expect(r.code).toBe(127);
  expect(r.stdout).toBe("");
  expect(r.stderr).toContain("claude (Claude Code) is not on PATH");
});

test("scripts/claude-local is shellcheck-clean", async () => {
  const shellcheck = Bun.which("shellcheck");
  if (shellcheck === null) {
    throw new Error("shellcheck is not installed; install it (Debian/Ubuntu: apt-get install -y shellcheck; macOS: brew install shellcheck)");
  }
  const proc = Bun.spawn([shellcheck, "--shell=bash", "--severity=style", WRAPPER, FAKE], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited,
  ]);
  expect(out + err).toBe("");
  expect(code).toBe(0);
});
