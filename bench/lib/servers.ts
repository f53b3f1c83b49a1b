/**
 * Servers the benchmark starts: Pensieve (via test/support/server-process.ts) and the peer,
 * `python -m mlx_lm.server`. Loopback only, ephemeral ports, stopped by pid.
 */
import { startServer, type RunningServer } from "../../test/support/server-process";
import { drain, freePort, stopProc, track, waitHttp } from "./util";

export const TOKEN = "pensieve-bench-token";

export interface Pensieve {
  url: string;
  pid: number;
  server: RunningServer;
  health(): Promise<Record<string, any>>;
  stop(): Promise<void>;
}

/** `pensieve serve --model DIR` from source (or `command`), ready when /health answers. */
export async function startPensieve(modelDir: string, opts: { command?: string[]; extraArgs?: string[]; env?: Record<string, string | undefined>; home?: string } = {}): Promise<Pensieve> {
  const server = await startServer({
    ...(opts.command ? { command: opts.command } : {}),
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.home ? { home: opts.home } : {}),
    args: ["--model", modelDir, "--token", TOKEN, ...(opts.extraArgs ?? [])],
    timeoutMs: 180_000,
  });
  track(server.proc);
  const health = async () => {
    // Engine stats and memory details are shown only with the token.
    const res = await fetch(`${server.url}/health`, { headers: { "x-api-key": TOKEN } });
    return (await res.json()) as Record<string, any>;
  };
  // /health answers while the worker may still be loading; wait for ready.
  const deadline = Date.now() + 180_000;
  for (;;) {
    const h = await health();
    if (h.ready) break;
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`Pensieve never became ready: ${JSON.stringify(h)}\n${server.output().slice(-2000)}`);
    }
    await Bun.sleep(100);
  }
  return {
    url: server.url,
    pid: server.proc.pid,
    server,
    health,
    async stop() {
      await server.stop();
    },
  };
}

export interface Peer {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** `python -m mlx_lm.server --model DIR --port FREE` on 127.0.0.1 (it cannot take port 0 and report it). */
export async function startPeer(python: string, modelDir: string, env?: Record<string, string>): Promise<Peer> {
  const port = freePort();
  const proc = track(Bun.spawn([python, "-m", "mlx_lm.server", "--model", modelDir, "--host", "127.0.0.1", "--port", String(port), "--log-level", "WARNING"], {
    ...(env ? { env: { ...process.env, ...env } } : {}),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  }));
  const out = drain(proc.stdout);
  const err = drain(proc.stderr);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHttp(`${url}/health`, 180_000, () => proc.exitCode !== null || !!proc.signalCode, 100);
  } catch (e) {
    await stopProc(proc);
    throw new Error(`mlx_lm.server did not start: ${String(e)}\n${out()}${err().slice(-2000)}`);
  }
  return {
    url,
    pid: proc.pid,
    async stop() {
      await stopProc(proc);
    },
  };
}
