/**
 * claude-local wins over the user's own Claude Code settings, with the real CLI
 * (node_modules/.bin/claude). Settings files outrank the process environment in Claude Code, so a
 * ~/.claude/settings.json (or a project's .claude/settings.json) whose "env" names another
 * endpoint, token, custom header or cloud provider used to take the whole session away from
 * Pensieve; the wrapper now passes its values in --settings, which outranks those files.
 *
 * Two loopback stand-ins: one plays Pensieve, the other plays the user's own proxy/provider. A
 * trap proxy (HTTPS_PROXY) catches any attempt to leave loopback. No model, no Python.
 */
import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startAnthropicStandin, type AnthropicStandin, type RecordedRequest } from "../support/anthropic-standin";
import { CLAUDE_LOCAL, claudeSandbox, fromClaude, isMessagesCall, runCli, type CliResult } from "../support/claude-cli";
import { startTrap, type Trap } from "../support/recording-proxy";

const PENSIEVE_TOKEN = "pensieve-settings-test-token";
const PENSIEVE_ANSWER = "Pensieve's answer, from the stand-in.";
const RUN_TIMEOUT_MS = 90_000;
/** Every secret below contains this, so one scan of the headers finds any of them. */
const MARK = "user-secret";

let work: string;
let pensieve: AnthropicStandin;
let theirs: AnthropicStandin;
let trap: Trap;
let n = 0;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "claude-local-settings-"));
  pensieve = startAnthropicStandin({ answer: PENSIEVE_ANSWER });
  theirs = startAnthropicStandin({ answer: "The user's own provider answered." });
  trap = startTrap();
});

afterEach(() => {
  pensieve.requests.length = 0;
  theirs.requests.length = 0;
  trap.seen.length = 0;
});

afterAll(async () => {
  await pensieve.stop();
  await theirs.stop();
  trap.stop();
  rmSync(work, { recursive: true, force: true });
});

interface Setup {
  home: string;
  cwd: string;
  env: Record<string, string>;
  /** The apiKeyHelper script: prints a secret and appends a line to `helperRan` each time it runs. */
  helper: string;
  helperRan: string;
}

/** A fresh HOME and project, an apiKeyHelper script, and a shell environment aimed at Pensieve's stand-in. */
function setup(shell: Record<string, string> = {}): Setup {
  n += 1;
  const dir = join(work, `case-${n}`);
  mkdirSync(dir);
  const box = claudeSandbox(dir, trap.url, { PENSIEVE_PORT: String(pensieve.port), PENSIEVE_TOKEN, ...shell });
  mkdirSync(join(box.home, ".claude"));
  const helper = join(box.home, "key-helper.sh");
  const helperRan = `${helper}.ran`;
  writeFileSync(helper, `#!/bin/sh\necho ran >> '${helperRan}'\necho sk-ant-${MARK}-from-key-helper\n`, { mode: 0o755 });
  return { ...box, helper, helperRan };
}

/** Writes `path` (creating its folder) and returns the exact bytes written. */
function writeSettings(path: string, settings: unknown): Buffer {
  mkdirSync(join(path, ".."), { recursive: true });
  // Unusual indentation and trailing blank lines: the file must come back byte for byte.
  const bytes = Buffer.from(`${JSON.stringify(settings, null, 3)}\n\n`, "utf8");
  writeFileSync(path, bytes);
  return bytes;
}

/** The settings of a user whose own provider and credentials would take every request. */
function hostileSettings(s: Setup): Record<string, unknown> {
  return {
    env: {
      ANTHROPIC_BASE_URL: theirs.url,
      ANTHROPIC_AUTH_TOKEN: `sk-ant-${MARK}-auth-token`,
      ANTHROPIC_API_KEY: `sk-ant-${MARK}-api-key`,
      CLAUDE_CODE_OAUTH_TOKEN: `sk-ant-oat01-${MARK}-oauth`,
      ANTHROPIC_CUSTOM_HEADERS: `X-Proxy-Authorization: Bearer ${MARK}-header\nX-Team: ${MARK}-team`,
      MY_NOTE: "naïve ✓", // non-ASCII bytes, which the file must keep too
    },
    apiKeyHelper: s.helper,
  };
}

const credentialsOf = (h: Record<string, string>) =>
  [h["x-api-key"], h.authorization?.replace(/^Bearer /, "")].filter((v) => v !== undefined);

/** Every header name or value that carries one of the user's secrets. */
const leaks = (rs: RecordedRequest[]) =>
  rs.flatMap((r) => Object.entries(r.headers).filter(([k, v]) => `${k}: ${v}`.includes(MARK)).map(([k, v]) => `${r.path} ${k}: ${v}`));

function diag(r: CliResult): string {
  const seen = (rs: RecordedRequest[]) => rs.map((q) => `${q.method} ${q.path}`).join(", ");
  return `claude exited ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}\n--- to Pensieve: ${seen(pensieve.requests)}\n--- to theirs: ${seen(theirs.requests)}\n--- trap: ${trap.seen.join(", ")}`;
}

/** What every run must show: Pensieve answered, with its own token only; nothing else was reached. */
function expectPensieveOnly(r: CliResult, s: Setup): RecordedRequest[] {
  if (r.code !== 0 || theirs.requests.length > 0 || trap.seen.length > 0) throw new Error(diag(r));
  expect(r.stdout.trim()).toBe(PENSIEVE_ANSWER);
  const fromCli = pensieve.requests.filter(fromClaude);
  expect(fromCli.filter(isMessagesCall).length).toBeGreaterThanOrEqual(1);
  for (const q of fromCli) {
    expect(credentialsOf(q.headers).length).toBeGreaterThan(0);
    expect(new Set(credentialsOf(q.headers))).toEqual(new Set([PENSIEVE_TOKEN]));
  }
  expect(leaks(pensieve.requests)).toEqual([]);
  expect(JSON.stringify(pensieve.requests.map((q) => q.body))).not.toContain(MARK);
  // The user's key helper never ran: its secret could not have gone anywhere.
  expect(existsSync(s.helperRan)).toBe(false);
  expect(theirs.requests).toEqual([]);
  expect(trap.seen).toEqual([]);
  return fromCli;
}

test("a ~/.claude/settings.json with its own endpoint, token, key helper and custom headers cannot take the session from Pensieve", async () => {
  // The shell sets a secret header too.
  const s = setup({ ANTHROPIC_CUSTOM_HEADERS: `X-Shell-Secret: ${MARK}-shell-header` });
  const userFile = join(s.home, ".claude", "settings.json");
  const before = writeSettings(userFile, hostileSettings(s));

  const r = await runCli([CLAUDE_LOCAL, "-p", "hi"], s.env, s.cwd, RUN_TIMEOUT_MS);

  expectPensieveOnly(r, s);
  expect(r.stderr).toContain("claude-local:");
  expect(readFileSync(userFile).equals(before)).toBe(true);
}, RUN_TIMEOUT_MS + 10_000);

// Each credential path alone, so each is shown to be closed on its own (they all leaked before).
const alone: Array<{ name: string; shell?: Record<string, string>; settings: (s: Setup) => Record<string, unknown> }> = [
  { name: "an apiKeyHelper in settings.json is not run", settings: (s) => ({ apiKeyHelper: s.helper }) },
  { name: "ANTHROPIC_CUSTOM_HEADERS in settings.json is not sent", settings: () => ({ env: { ANTHROPIC_CUSTOM_HEADERS: `X-Secret: ${MARK}-settings-header` } }) },
  { name: "ANTHROPIC_CUSTOM_HEADERS in the shell is not sent", shell: { ANTHROPIC_CUSTOM_HEADERS: `X-Secret: ${MARK}-shell-header` }, settings: () => ({}) },
  { name: "ANTHROPIC_API_KEY in settings.json is not sent", settings: () => ({ env: { ANTHROPIC_API_KEY: `sk-ant-${MARK}-settings-key` } }) },
];
for (const c of alone) {
  test(`alone: ${c.name}`, async () => {
    const s = setup(c.shell);
    const userFile = join(s.home, ".claude", "settings.json");
    const before = writeSettings(userFile, c.settings(s));

    const r = await runCli([CLAUDE_LOCAL, "-p", "hi"], s.env, s.cwd, RUN_TIMEOUT_MS);

    expectPensieveOnly(r, s);
    expect(readFileSync(userFile).equals(before)).toBe(true);
  }, RUN_TIMEOUT_MS + 10_000);
}

test("a project's .claude/settings.json and settings.local.json cannot either", async () => {
  const s = setup();
  const shared = join(s.cwd, ".claude", "settings.json");
  const local = join(s.cwd, ".claude", "settings.local.json");
  const beforeShared = writeSettings(shared, { env: { ANTHROPIC_BASE_URL: theirs.url, ANTHROPIC_AUTH_TOKEN: `sk-ant-${MARK}-project` } });
  const beforeLocal = writeSettings(local, hostileSettings(s));

  const r = await runCli([CLAUDE_LOCAL, "-p", "hi"], s.env, s.cwd, RUN_TIMEOUT_MS);

  expectPensieveOnly(r, s);
  expect(readFileSync(shared).equals(beforeShared)).toBe(true);
  expect(readFileSync(local).equals(beforeLocal)).toBe(true);
}, RUN_TIMEOUT_MS + 10_000);

test("a cloud provider chosen in settings (Bedrock) does not take it either", async () => {
  const s = setup();
  writeSettings(join(s.home, ".claude", "settings.json"), {
    env: { CLAUDE_CODE_USE_BEDROCK: "1", AWS_REGION: "us-east-1", AWS_BEARER_TOKEN_BEDROCK: `${MARK}-bedrock` },
  });

  const r = await runCli([CLAUDE_LOCAL, "-p", "hi"], s.env, s.cwd, RUN_TIMEOUT_MS);

  expectPensieveOnly(r, s);
}, RUN_TIMEOUT_MS + 10_000);

test("the user's own --settings file still applies, while the wrapper's endpoint and token still win", async () => {
  const s = setup();
  const userFile = join(s.home, ".claude", "settings.json");
  const beforeUser = writeSettings(userFile, hostileSettings(s));
  // Their --settings file: a model and an output cap (both visible in the request), plus their own
  // endpoint, token and key helper, which must lose to the wrapper's.
  const theirFile = join(s.home, "my-settings.json");
  const beforeTheirs = writeSettings(theirFile, {
    model: "claude-model-from-user-settings-flag",
    env: { CLAUDE_CODE_MAX_OUTPUT_TOKENS: "1234", ANTHROPIC_BASE_URL: theirs.url, ANTHROPIC_AUTH_TOKEN: `sk-ant-${MARK}-flag` },
    apiKeyHelper: s.helper,
  });

  const r = await runCli([CLAUDE_LOCAL, "--settings", theirFile, "-p", "hi"], s.env, s.cwd, RUN_TIMEOUT_MS);

  const calls = expectPensieveOnly(r, s).filter(isMessagesCall);
  for (const q of calls) {
    const body = q.body as { model?: string; max_tokens?: number };
    expect(body.model).toBe("claude-model-from-user-settings-flag");
    expect(body.max_tokens).toBe(1234);
  }
  expect(readFileSync(userFile).equals(beforeUser)).toBe(true);
  expect(readFileSync(theirFile).equals(beforeTheirs)).toBe(true);
}, RUN_TIMEOUT_MS + 10_000);

test("an inline --settings=JSON still applies too", async () => {
  const s = setup();
  writeSettings(join(s.home, ".claude", "settings.json"), hostileSettings(s));
  const inline = JSON.stringify({ model: "claude-model-from-inline-settings", env: { CLAUDE_CODE_MAX_OUTPUT_TOKENS: "2345" } });

  const r = await runCli([CLAUDE_LOCAL, "-p", `--settings=${inline}`, "hi"], s.env, s.cwd, RUN_TIMEOUT_MS);

  const calls = expectPensieveOnly(r, s).filter(isMessagesCall);
  for (const q of calls) {
    const body = q.body as { model?: string; max_tokens?: number };
    expect(body.model).toBe("claude-model-from-inline-settings");
    expect(body.max_tokens).toBe(2345);
  }
}, RUN_TIMEOUT_MS + 10_000);
