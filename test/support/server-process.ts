/**
 * Start a real Pensieve server process (from source or the compiled binary) on an
 * ephemeral port, wait for /health while watching for an early exit, and stop it by pid.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const REPO = resolve(import.meta.dir, "..", "..");
export const BUN = process.execPath;
/** The token the server expects by default. */
export const DEFAULT_TOKEN = "pensieve-local-token";

/** The Python that runs the bridge in tests. */
export function testPython(): string {
  const candidates = [process.env.PENSIEVE_PYTHON, join(REPO, ".venv/bin/python"), "/tmp/probe-venv/bin/python"];
  for (const c of candidates) if (c && existsSync(c)) return c;
  throw new Error("no Python with the bridge's requirements: run `npm test` (it creates .venv) or set PENSIEVE_PYTHON");
}

let tinyModel: Promise<string> | undefined;
/** Generate the tiny model once per test process (idempotent on disk too). */
export function tinyModelDir(): Promise<string> {
  tinyModel ??= (async () => {
    const dir = join(REPO, ".pensieve", "test-models", "tiny");
    const proc = Bun.spawn([join(REPO, "scripts/make-tiny-model"), dir], {
      env: { ...process.env, PENSIEVE_PYTHON: testPython() },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [code, err] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
    if (code !== 0) throw new Error(`make-tiny-model failed (${code}): ${err}`);
    return dir;
  })();
  return tinyModel;
}

export interface RunningServer {
  url: string;
  port: number;
  proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  /** The PENSIEVE_HOME the server runs with. */
  home: string;
  /** The startup line ("Pensieve X listening on ..."). */
  banner: string;
  /** Milliseconds from spawn to the first /health 200. */
  readyMs: number;
  /** Everything the process printed so far (stdout + stderr). */
  output(): string;
  /** SIGTERM (then SIGKILL after 10 s) by pid; resolves with the exit code. Idempotent. */
  stop(signal?: NodeJS.Signals): Promise<number>;
}

export interface StartOptions {
  /** Command prefix: defaults to running src/main.ts with this Bun. */
  command?: string[];
  args?: string[];
  env?: Record<string, string | undefined>;
  /** Working directory of the server; default the repository. */
  cwd?: string;
  /** PENSIEVE_HOME; default a fresh temp dir, removed on stop. */
  home?: string;
  timeoutMs?: number;
}

// The startup line first; any loopback URL as a fallback for older banners.
const BANNER_RE = /listening on http:\/\/(?:127\.0\.0\.1|localhost|\[::1\]|[\w.-]+):(\d+)/;

const live = new Set<Bun.Subprocess>();
// A test run that dies mid-way must not leave servers behind: kill what is still ours, by pid.
process.on("exit", () => {
  for (const p of live) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
});

/** Drops variables set to undefined, so `env: { X: undefined }` unsets X for the child. */
export function cleanEnv(env: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
}

/** Start `pensieve serve --port 0 ...` and resolve once /health answers. */
export async function startServer(opts: StartOptions = {}): Promise<RunningServer> {
  const command = opts.command ?? [BUN, join(REPO, "src/main.ts")];
  const ownHome = opts.home === undefined;
  const home = opts.home ?? mkdtempSync(join(tmpdir(), "pensieve-home-"));
  const args = ["serve", "--port", "0", "--host", "127.0.0.1", ...(opts.args ?? [])];
  const started = performance.now();
  const proc = Bun.spawn([...command, ...args], {
    cwd: opts.cwd ?? REPO,
    // The tiny demo model unless a test names one: the built-in default would fetch 500 MB from PyPI.
    env: cleanEnv({ ...process.env, PENSIEVE_HOME: home, PENSIEVE_PYTHON: testPython(), PENSIEVE_MODEL: "demo-tiny", ...opts.env }),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  live.add(proc);
  let out = "";
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    const reader = stream.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) out += dec.decode(r.value, { stream: true });
  };
  void pump(proc.stdout);
  void pump(proc.stderr);

  let stopped: Promise<number> | undefined;
  const stop = (signal: NodeJS.Signals = "SIGTERM") =>
    (stopped ??= (async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill(signal);
        const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
        await proc.exited;
        clearTimeout(t);
      }
      live.delete(proc);
      if (ownHome) rmSync(home, { recursive: true, force: true });
      return proc.exitCode ?? 128;
    })());

  const deadline = Date.now() + (opts.timeoutMs ?? 90_000);
  let exited: number | null = null;
  void proc.exited.then((c) => (exited = c));
  let port = 0;
  let readyMs = -1;
  while (Date.now() < deadline) {
    if (exited !== null) {
      await stop();
      throw new Error(`server exited early with code ${exited}:\n${out}`);
    }
    const m = port ? null : BANNER_RE.exec(out);
    if (m) port = Number(m[1]);
    if (port) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/health`);
        if (res.ok) {
          readyMs = performance.now() - started;
          break;
        }
      } catch {
        // not accepting yet
      }
    }
    await Bun.sleep(50);
  }
  if (readyMs < 0) {
    await stop("SIGKILL");
    throw new Error(`server did not become healthy in time:\n${out}`);
  }
  const banner = out.split("\n").find((l) => BANNER_RE.test(l)) ?? "";
  return { url: `http://127.0.0.1:${port}`, port, proc, home, banner, readyMs, output: () => out, stop };
}

/** True while a process with this pid exists (signal 0 probes without killing). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A request as captured on the wire (test/fixtures/claude-code-first-turn.json). */
export interface CapturedRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

export async function loadCapturedRequest(path = join(REPO, "test/fixtures/claude-code-first-turn.json")): Promise<CapturedRequest> {
  return (await Bun.file(path).json()) as CapturedRequest;
}

/** Replays a captured request against `base` exactly as captured, minus host and content-length. */
export function replayCaptured(base: string, captured: CapturedRequest, init: { signal?: AbortSignal } = {}): Promise<Response> {
  const headers = Object.fromEntries(
    Object.entries(captured.headers).filter(([k]) => !["host", "content-length"].includes(k.toLowerCase())),
  );
  return fetch(new URL(captured.url, base), {
    method: captured.method,
    headers,
    body: JSON.stringify(captured.body),
    ...(init.signal ? { signal: init.signal } : {}),
  });
}
