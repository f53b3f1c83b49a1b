/**
 * A fake OpenAI-compatible upstream for unit tests: an injectable fetch that routes to a
 * handler, records requests, and honours AbortSignal like real fetch (rejects before headers,
 * errors the body after). Fixtures are replayed as streamed bodies in chosen chunk sizes.
 */
import { join } from "node:path";
import { readFileSync } from "node:fs";
import type { FetchLike } from "../../../src/upstream/http";

export const FIXTURES = join(import.meta.dir, "..", "..", "fixtures", "openai");

/** Raw bytes of a fixture file. */
export function fixture(name: string): Uint8Array {
  return new Uint8Array(readFileSync(join(FIXTURES, name)));
}

/** The same fixture with CRLF line ends. */
export function crlf(bytes: Uint8Array): Uint8Array {
  return new TextEncoder().encode(new TextDecoder().decode(bytes).replaceAll("\n", "\r\n"));
}

/** Split bytes into pieces of the given sizes, cycling through them. */
export function split(bytes: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  let k = 0;
  while (i < bytes.length) {
    const n = Math.max(1, sizes[k++ % sizes.length] ?? 1);
    out.push(bytes.subarray(i, i + n));
    i += n;
  }
  return out;
}

export interface SeenRequest {
  url: string;
  path: string;
  method: string;
  headers: Headers;
  /** Parsed JSON body, when there was one. */
  body: any;
}

export interface StreamOptions {
  status?: number;
  headers?: Record<string, string>;
  /** Keep the body open after the last chunk (a stalled upstream). */
  hang?: boolean;
}

export type Handler = (req: SeenRequest, signal: AbortSignal | undefined) => Response | Promise<Response>;

/** A streamed response whose body yields `chunks` one per read and errors when `signal` aborts. */
export function streamResponse(chunks: (string | Uint8Array)[], signal: AbortSignal | undefined, opts: StreamOptions = {}): Response {
  const enc = new TextEncoder();
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    start(ctl) {
      signal?.addEventListener("abort", () => {
        try {
          ctl.error(new DOMException("The operation was aborted.", "AbortError"));
        } catch {
          // already closed
        }
      });
    },
    pull(ctl) {
      if (i < chunks.length) {
        const c = chunks[i++] as string | Uint8Array;
        ctl.enqueue(typeof c === "string" ? enc.encode(c) : c);
      } else if (!opts.hang) {
        ctl.close();
      } else {
        return new Promise<void>(() => {}); // never more data
      }
    },
  });
  return new Response(body, {
    status: opts.status ?? 200,
    headers: { "content-type": "text/event-stream", ...opts.headers },
  });
}

/** JSON response helper. */
export function json(value: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json", ...headers } });
}

/** A fetch error shaped like Bun's for a refused connection. */
export function connectionRefused(): Error {
  return Object.assign(new TypeError("Unable to connect. Is the computer able to access the url?"), {
    code: "ECONNREFUSED",
  });
}

export interface FakeUpstream {
  fetch: FetchLike;
  requests: SeenRequest[];
}

/** Build a fake fetch around `handler`; a handler that never resolves simulates a hung server. */
export function fakeUpstream(handler: Handler): FakeUpstream {
  const requests: SeenRequest[] = [];
  const fetch: FetchLike = async (input, init) => {
    const url = new URL(input);
    const text = typeof init?.body === "string" ? init.body : undefined;
    const seen: SeenRequest = {
      url: input,
      path: url.pathname,
      method: init?.method ?? "GET",
      headers: new Headers(init?.headers),
      body: text ? JSON.parse(text) : undefined,
    };
    requests.push(seen);
    const signal = init?.signal ?? undefined;
    if (signal?.aborted) throw new DOMException("The operation was aborted.", "AbortError");
    return await new Promise<Response>((resolve, reject) => {
      signal?.addEventListener("abort", () => reject(new DOMException("The operation was aborted.", "AbortError")));
      Promise.resolve()
        .then(() => handler(seen, signal))
        .then(resolve, reject);
    });
  };
  return { fetch, requests };
}

/** Collect every event of an async iterable (or the error it ends with). */
export async function collect<T>(it: AsyncIterable<T>): Promise<{ events: T[]; error?: unknown }> {
  const events: T[] = [];
  try {
    for await (const e of it) events.push(e);
    return { events };
  } catch (error) {
    return { events, error };
  }
}
