/** HTTP plumbing for one upstream: URLs, auth, timeouts, and failure classification. */
import { UpstreamUnavailableError } from "./errors";

/** The subset of fetch the upstream uses; injectable for tests. */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/**
 * The server root of an OpenAI base URL: "http://h:8000/v1/" -> "http://h:8000". vLLM and
 * llama-server keep /tokenize, /metrics and /props beside /v1, not under it.
 */
export function upstreamRoot(baseUrl: string): string {
  let u: URL;
  try {
    u = new URL(baseUrl.trim());
  } catch {
    throw new Error(`upstream URL "${baseUrl}" is not a URL (expected e.g. http://127.0.0.1:8000/v1)`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new Error(`upstream URL "${baseUrl}" must be http or https`);
  }
  const path = u.pathname.replace(/\/+$/, "").replace(/\/v1$/, "");
  return `${u.origin}${path}`;
}

/** A response plus how long the upstream took to send its headers. */
export interface Timed {
  res: Response;
  latencyMs: number;
}

/** Reads a streamed body with a per-chunk idle timeout; aborts the request on stall. */
export interface StreamHandle extends Timed {
  /** Next body chunk, or null at the end. Throws UpstreamUnavailableError on stall. */
  read(): Promise<Uint8Array | null>;
  /** Release the connection (idempotent). */
  close(): void;
}

/** One upstream server: its root URL, its key, and timed requests against it. */
export class UpstreamHttp {
  constructor(
    readonly root: string,
    private readonly fetchFn: FetchLike,
    private readonly apiKey: string | undefined,
  ) {}

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return {
      accept: "application/json",
      ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}),
      ...extra,
    };
  }

  /** A bounded request (probes, tokenize): whole-request timeout. */
  async call(path: string, init: RequestInit, timeoutMs: number): Promise<Timed> {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    const t0 = performance.now();
    try {
      const res = await this.fetchFn(this.root + path, { ...init, signal: ctl.signal });
      // Read the body inside the timeout so a server that stalls mid-body cannot hang us.
      const body = await res.arrayBuffer();
      return {
        res: new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers }),
        latencyMs: performance.now() - t0,
      };
    } catch (e) {
      throw this.failure(e, ctl.signal.aborted ? `no answer within ${timeoutMs} ms` : undefined);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Open a streaming request: `headersMs` to get response headers, then at most `idleMs`
   * between body chunks. `signal` (the client leaving) aborts it; that surfaces as an AbortError.
   */
  async stream(
    path: string,
    init: RequestInit,
    timeouts: { headersMs: number; idleMs: number },
    signal?: AbortSignal,
  ): Promise<StreamHandle> {
    const ctl = new AbortController();
    let stalled: string | undefined;
    const onAbort = () => ctl.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) onAbort();
    let timer = setTimeout(() => {
      stalled = `no response headers within ${timeouts.headersMs} ms`;
      ctl.abort();
    }, timeouts.headersMs);
    const cleanup = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const t0 = performance.now();
    let res: Response;
    try {
      res = await this.fetchFn(this.root + path, { ...init, signal: ctl.signal });
    } catch (e) {
      cleanup();
      if (signal?.aborted && !stalled) throw e;
      throw this.failure(e, stalled);
    }
    const latencyMs = performance.now() - t0;
    clearTimeout(timer);
    // The reader is taken lazily so that an error answer's body can still be read as text.
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      cleanup();
      reader?.cancel().catch(() => {});
      ctl.abort();
    };
    const read = async (): Promise<Uint8Array | null> => {
      if (closed || !res.body) return null;
      reader ??= res.body.getReader();
      timer = setTimeout(() => {
        stalled = `upstream sent nothing for ${timeouts.idleMs} ms`;
        ctl.abort();
      }, timeouts.idleMs);
      try {
        const { value, done } = await reader.read();
        return done ? null : value;
      } catch (e) {
        if (signal?.aborted && !stalled) throw e;
        throw this.failure(e, stalled, true);
      } finally {
        clearTimeout(timer);
      }
    };
    return { res, latencyMs, read, close };
  }

  /** Classify a fetch failure as the upstream being unavailable. */
  failure(e: unknown, stalled?: string, midStream = false): UpstreamUnavailableError {
    if (stalled) return new UpstreamUnavailableError(`upstream ${this.root}: ${stalled}`, "timeout", this.root);
    const err = e as { code?: string; message?: string };
    const what = midStream ? "connection to upstream lost" : "cannot reach upstream";
    const detail = err.code ?? err.message ?? String(e);
    return new UpstreamUnavailableError(
      `${what} ${this.root} (${detail}); is the OpenAI-compatible server running?`,
      midStream ? "stream_broken" : "unreachable",
      this.root,
    );
  }
}
