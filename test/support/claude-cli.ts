/**
 * Runs the real Claude Code CLI (node_modules/.bin/claude) in tests: a temp HOME and project
 * folder, an environment that keeps it quiet and offline, and a spawn with a hard timeout.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Exchange } from "./recording-proxy";
import { REPO } from "./server-process";

/** Folder holding the `claude` binary, put first on PATH. */
export const CLAUDE_BIN_DIR = join(REPO, "node_modules/.bin");
/** The wrapper under test. */
export const CLAUDE_LOCAL = join(REPO, "scripts/claude-local");

/** Where a CLI run lives and the environment it gets. */
export interface ClaudeSandbox {
  home: string;
  cwd: string;
  env: Record<string, string>;
}

/**
 * Makes `work`/home and `work`/project and an environment for the CLI: only PATH, the temp HOME
 * and LANG from outside, plus `extra`; every proxy variable points at `trapUrl` except loopback.
 */
export function claudeSandbox(work: string, trapUrl: string, extra: Record<string, string> = {}): ClaudeSandbox {
  const home = join(work, "home");
  const cwd = join(work, "project");
  mkdirSync(home);
  mkdirSync(cwd);
  const loopback = "127.0.0.1,localhost,::1";
  const env: Record<string, string> = {
    PATH: `${CLAUDE_BIN_DIR}:${process.env.PATH ?? "/usr/bin:/bin"}`,
    HOME: home,
    LANG: "C.UTF-8",
    // Keep Claude Code quiet and local; anything that still tries the internet hits the trap.
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
    DISABLE_TELEMETRY: "1",
    DISABLE_ERROR_REPORTING: "1",
    DISABLE_AUTOUPDATER: "1",
    CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL: "1",
    HTTPS_PROXY: trapUrl,
    HTTP_PROXY: trapUrl,
    https_proxy: trapUrl,
    http_proxy: trapUrl,
    NO_PROXY: loopback,
    no_proxy: loopback,
    ...extra,
  };
  return { home, cwd, env };
}

/** Outcome of one CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Spawns `cmd` with exactly `env`, no stdin; SIGKILLs it after `timeoutMs`. */
export async function runCli(cmd: string[], env: Record<string, string>, cwd: string, timeoutMs: number): Promise<CliResult> {
  const proc = Bun.spawn(cmd, { env, cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  try {
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** True when the request came from Claude Code itself (not the wrapper or the test). */
export const fromClaude = (x: Pick<Exchange, "headers">): boolean => (x.headers["user-agent"] ?? "").startsWith("claude-cli/");

/** A model turn: POST /v1/messages, not /v1/messages/count_tokens. */
export const isMessagesCall = (x: Pick<Exchange, "method" | "path">): boolean =>
  x.method === "POST" && x.path.startsWith("/v1/messages") && !x.path.includes("count_tokens");

/** The concatenated text_delta of an Anthropic SSE body. */
export function sseText(body: string): string {
  let text = "";
  for (const frame of body.split(/\r?\n\r?\n/)) {
    const data = frame
      .split(/\r?\n/)
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).trimStart())
      .join("\n");
    if (data === "") continue;
    const ev = JSON.parse(data) as { type?: string; delta?: { type?: string; text?: string } };
    if (ev.type === "content_block_delta" && ev.delta?.type === "text_delta") text += ev.delta.text ?? "";
  }
  return text;
}
