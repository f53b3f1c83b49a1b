/**
 * A real OpenAI-compatible upstream for tests: `mlx_lm.server` from the installed mlx-lm, on a
 * free loopback port, with its own empty HF cache. Stopped by pid. (Same logic as the helper in
 * test/integration/upstream.test.ts, shared here for the end-to-end tests.)
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { testPython } from "./server-process";

/** A port nobody listens on right now: bind port 0, read it, release it. */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface MlxServer {
  /** http://127.0.0.1:PORT (no /v1). */
  url: string;
  port: number;
  proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  /** Everything it printed so far (its request log goes to stderr). */
  output(): string;
  /** SIGTERM (SIGKILL after 10 s) by pid, then removes the temp HF cache. Idempotent. */
  stop(): Promise<void>;
}

const live = new Set<Bun.Subprocess>();
// A test run that dies mid-way must not leave servers behind: kill what is still ours, by pid.
process.on("exit", () => {
  for (const p of live) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
});

export interface MlxServerOptions {
  /** Extra mlx_lm.server flags, e.g. ["--temp", "1.0"]. */
  args?: string[];
  timeoutMs?: number;
}

/** Start `python -m mlx_lm.server --model DIR` on loopback and wait for its /health. */
export async function startMlxServer(modelDir: string, opts: MlxServerOptions = {}): Promise<MlxServer> {
  // An empty HF cache of our own: mlx_lm.server's /v1/models scans HF_HOME/hub (and fails when it is missing).
  const hfHome = mkdtempSync(join(tmpdir(), "pensieve-hf-"));
  mkdirSync(join(hfHome, "hub"), { recursive: true });
  // The port is free when read and taken a moment later: a race with another process is
  // possible but rare, and shows as an early exit ("address already in use").
  const port = await freePort();
  const proc = Bun.spawn(
    [testPython(), "-m", "mlx_lm.server", "--model", modelDir, "--host", "127.0.0.1", "--port", String(port), ...(opts.args ?? [])],
    {
      env: { ...process.env, HF_HOME: hfHome, HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  live.add(proc);
  let out = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    const reader = s.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) out += dec.decode(r.value, { stream: true });
  };
  void pump(proc.stdout);
  void pump(proc.stderr);
  const url = `http://127.0.0.1:${port}`;
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
        await proc.exited;
        clearTimeout(t);
      }
      live.delete(proc);
      rmSync(hfHome, { recursive: true, force: true });
    })());
  const deadline = Date.now() + (opts.timeoutMs ?? 90_000);
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      await stop();
      throw new Error(`mlx_lm.server exited early (${proc.exitCode ?? proc.signalCode}):\n${out}`);
    }
    try {
      if ((await fetch(`${url}/health`)).ok) return { url, port, proc, output: () => out, stop };
    } catch {
      // not listening yet
    }
    await Bun.sleep(200);
  }
  await stop();
  throw new Error(`mlx_lm.server did not become healthy in time:\n${out}`);
}
