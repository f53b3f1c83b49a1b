/**
 * Start a real Pensieve server process (from source or the compiled binary) on an
 * ephemeral port, wait for /health while watching for an early exit, and stop it by pid.
 */
import { join, resolve } from "node:path";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";

export const REPO = resolve(import.meta.dir, "..", "..");
export const BUN = process.execPath;

/** The Python that runs the bridge in tests. */
export function testPython(): string {
  const candidates = [process.env.PENSIEVE_PYTHON, join(REPO, ".venv/bin/python"), "/tmp/probe-venv/bin/python"];
  for (const c of candidates) if (c && Bun.file(c).size > 0) return c;
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
  /** Everything the process printed so far (stdout + stderr). */
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<number>;
}

export interface StartOptions {
  /** Command prefix: defaults to running src/main.ts with this Bun. */
  command?: string[];
  args?: string[];
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
  token?: string;
}

const LISTEN_RE = /http:\/\/(?:127\.0\.0\.1|localhost|\[::1\]|[\w.-]+):(\d+)/;

/** Start `pensieve serve --port 0 ...` and resolve once /health answers. */
export async function startServer(opts: StartOptions = {}): Promise<RunningServer> {
  const command = opts.command ?? [BUN, join(REPO, "src/main.ts")];
  const home = mkdtempSync(join(tmpdir(), "pensieve-home-"));
  const args = ["serve", "--port", "0", "--host", "127.0.0.1", ...(opts.args ?? [])];
  const proc = Bun.spawn([...command, ...args], {
    cwd: REPO,
    env: { ...process.env, PENSIEVE_HOME: home, PENSIEVE_PYTHON: testPython(), ...opts.env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  let out = "";
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const chunk of stream) out += dec.decode(chunk, { stream: true });
  };
  void pump(proc.stdout);
  void pump(proc.stderr);

  const deadline = Date.now() + (opts.timeoutMs ?? 90_000);
  let exited: number | null = null;
  void proc.exited.then((c) => (exited = c));
  let port = 0;
  while (Date.now() < deadline) {
    if (exited !== null) throw new Error(`server exited early with code ${exited}:\n${out}`);
    const m = port ? null : out.match(LISTEN_RE);
    if (m) port = Number(m[1]);
    if (port) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/health`);
        if (res.ok) break;
      } catch {
        // not accepting yet
      }
    }
    await Bun.sleep(100);
  }
  if (!port || Date.now() >= deadline) {
    proc.kill("SIGKILL");
    throw new Error(`server did not become healthy in time:\n${out}`);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    proc,
    output: () => out,
    async stop(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill(signal);
        const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
        await proc.exited;
        clearTimeout(t);
      }
      return proc.exitCode ?? 128;
    },
  };
}
