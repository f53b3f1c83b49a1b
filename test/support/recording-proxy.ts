/**
 * Loopback proxies for tests that drive the real Claude Code CLI (test/claude-local/*):
 * a recording reverse proxy and an HTTPS_PROXY trap.
 */

/** One request that went through the recorder, and its answer. */
export interface Exchange {
  method: string;
  path: string;
  headers: Record<string, string>;
  /** Parsed JSON body, or the raw text. */
  body: unknown;
  status: number;
  /** The response body as forwarded to the client (SSE or JSON), once it has ended. */
  response: Promise<string>;
}

export interface Recorder {
  url: string;
  port: number;
  exchanges: Exchange[];
  stop(): Promise<void>;
}

const HOP_BY_HOP = ["connection", "keep-alive", "transfer-encoding", "host", "content-length"];

/** A loopback reverse proxy that forwards to `target` and keeps a copy of both directions. */
export function startRecorder(target: string): Recorder {
  const exchanges: Exchange[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 255, // seconds: a prefill may be silent for a while between pings
    async fetch(req) {
      const url = new URL(req.url);
      const raw = req.method === "GET" || req.method === "HEAD" ? undefined : await req.text();
      const headers: Record<string, string> = {};
      req.headers.forEach((v, k) => {
        headers[k.toLowerCase()] = v;
      });
      const forward = new Headers(req.headers);
      for (const h of HOP_BY_HOP) forward.delete(h);
      forward.set("accept-encoding", "identity"); // keep the copy readable
      const upstream = await fetch(`${target}${url.pathname}${url.search}`, { method: req.method, headers: forward, body: raw, redirect: "manual" });
      let body: unknown = raw;
      try {
        body = raw ? JSON.parse(raw) : undefined;
      } catch {
        // keep the text
      }
      const out = new Headers(upstream.headers);
      for (const h of [...HOP_BY_HOP, "content-encoding"]) out.delete(h);
      const record = { method: req.method, path: url.pathname + url.search, headers, body, status: upstream.status };
      if (upstream.body === null) {
        exchanges.push({ ...record, response: Promise.resolve("") });
        return new Response(null, { status: upstream.status, headers: out });
      }
      const [toClient, toLog] = upstream.body.tee();
      exchanges.push({ ...record, response: new Response(toLog).text() });
      return new Response(toClient, { status: upstream.status, headers: out });
    },
  });
  const port = server.port ?? 0;
  return { url: `http://127.0.0.1:${port}`, port, exchanges, stop: () => server.stop(true) };
}

/** A running trap: `seen` holds the first line of every attempt. */
export interface Trap {
  url: string;
  seen: string[];
  stop(): void;
}

/** A proxy that refuses everything and remembers the first line (e.g. "CONNECT host:443"). */
export function startTrap(): Trap {
  const seen: string[] = [];
  const listener = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(sock, data) {
        seen.push(data.toString("latin1").split("\r\n")[0] ?? "");
        sock.end();
      },
    },
  });
  return { url: `http://127.0.0.1:${listener.port}`, seen, stop: () => listener.stop(true) };
}
