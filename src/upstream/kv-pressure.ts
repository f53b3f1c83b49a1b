/**
 * The upstream side of KV-cache pressure: reading a server's Prometheus /metrics text.
 * What the usage means for the gate (parsing, levels, polling) lives in src/memory/kv-pressure.ts.
 */
import { type FetchLike, UpstreamHttp, upstreamRoot } from "./http";

/** Where metrics come from, and how to read them within a time limit. */
export interface MetricsReader {
  /** The server's root URL, as /health shows it. */
  readonly url: string;
  /** The /metrics text; rejects on a failed call or a non-2xx answer. */
  read(timeoutMs: number): Promise<string>;
}

/** Reads `{root}/metrics` of an OpenAI-compatible server (vLLM, SGLang, llama-server --metrics), with its key. */
export function upstreamMetrics(opts: { baseUrl: string; apiKey?: string; fetch?: FetchLike }): MetricsReader {
  const http = new UpstreamHttp(upstreamRoot(opts.baseUrl), opts.fetch ?? ((i, init) => fetch(i, init)), opts.apiKey);
  return {
    url: http.root,
    async read(timeoutMs) {
      const { res } = await http.call("/metrics", { headers: http.headers({ accept: "text/plain" }) }, timeoutMs);
      if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
      return res.text();
    },
  };
}
