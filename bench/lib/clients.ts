/**
 * The three ways a prompt is run in the comparisons: Pensieve's Anthropic SSE, mlx_lm.server's
 * OpenAI SSE, and the in-process mlx-lm baseline (bench/engine_baseline.py). Each returns the
 * same timing shape, measured the same way: TTFT = request start to the first non-empty text;
 * decode = first text to the end of the stream; tokens/s = (output tokens - 1) / decode.
 */
import { join } from "node:path";
import { loadFields } from "../../src/bridge/worker-info";
import { engineTuning } from "../../src/bridge/mlx-engine-options";
import { serveDefaults } from "../../src/config";
import type { ChatMessage, ToolSpec } from "../../src/engine/types";
import { chunks, drain, stopProc, track } from "./util";

export interface RunTiming {
  ttftMs: number;
  decodeMs: number;
  totalMs: number;
  inputTokens: number;
  outputTokens: number;
  /** Prompt tokens the server says it reused (Pensieve cache_read_input_tokens / OpenAI cached_tokens). */
  cachedTokens: number;
  text: string;
  stop: string | null;
}

export const decodeTps = (r: RunTiming): number => (r.outputTokens > 1 && r.decodeMs > 0 ? ((r.outputTokens - 1) * 1000) / r.decodeMs : Number.NaN);

interface SseBlock {
  event: string | null;
  data: string;
  at: number;
}

/** Parse an SSE body into blocks, timestamping each as it arrives. */
async function* sseBlocks(body: ReadableStream<Uint8Array>): AsyncGenerator<SseBlock> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of chunks(body)) {
    buf += dec.decode(chunk, { stream: true });
    const at = performance.now();
    for (let i = buf.indexOf("\n\n"); i >= 0; i = buf.indexOf("\n\n")) {
      const raw = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event: string | null = null;
      const data: string[] = [];
      for (const line of raw.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (event !== null || data.length) yield { event, data: data.join("\n"), at };
    }
  }
}

/** POST an Anthropic Messages request with stream: true and time it. */
export async function anthropicStream(baseUrl: string, body: Record<string, unknown>, token: string): Promise<RunTiming> {
  const t0 = performance.now();
  const res = await fetch(`${baseUrl}/v1/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": token, "anthropic-version": "2023-06-01" },
    body: JSON.stringify({ ...body, stream: true }),
  });
  if (!res.ok || !res.body) throw new Error(`Pensieve answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
  let first = Number.NaN;
  let end = Number.NaN;
  let text = "";
  let stop: string | null = null;
  let usage: Record<string, number> = {};
  for await (const b of sseBlocks(res.body)) {
    if (!b.data) continue;
    const ev = JSON.parse(b.data) as Record<string, any>;
    if (ev.type === "message_start") usage = { ...usage, ...(ev.message?.usage ?? {}) };
    // A tool call is output too (Pensieve shows it once complete): the first one ends the TTFT as text does.
    else if (ev.type === "content_block_start" && ev.content_block?.type === "tool_use") {
      if (Number.isNaN(first)) first = b.at;
    } else if (ev.type === "content_block_delta" && ev.delta?.type === "text_delta" && ev.delta.text) {
      if (Number.isNaN(first)) first = b.at;
      text += ev.delta.text;
    } else if (ev.type === "message_delta") {
      usage = { ...usage, ...(ev.usage ?? {}) };
      stop = ev.delta?.stop_reason ?? null;
      end = b.at;
    } else if (ev.type === "error") throw new Error(`stream error: ${JSON.stringify(ev.error)}`);
  }
  return {
    ttftMs: first - t0,
    decodeMs: end - first,
    totalMs: end - t0,
    // Anthropic counts reused and newly cached prompt tokens apart from input_tokens.
    inputTokens: (usage.input_tokens ?? Number.NaN) + (usage.cache_read_input_tokens ?? 0) + (usage.cache_creation_input_tokens ?? 0),
    outputTokens: usage.output_tokens ?? Number.NaN,
    cachedTokens: usage.cache_read_input_tokens ?? 0,
    text,
    stop,
  };
}

/** POST an OpenAI chat completion with stream: true (mlx_lm.server) and time it. */
export async function openaiStream(baseUrl: string, body: Record<string, unknown>): Promise<RunTiming> {
  const t0 = performance.now();
  const res = await fetch(`${baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok || !res.body) throw new Error(`mlx_lm.server answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
  let first = Number.NaN;
  let end = Number.NaN;
  let text = "";
  let stop: string | null = null;
  let usage: Record<string, any> = {};
  let timings: Record<string, number> = {};
  for await (const b of sseBlocks(res.body)) {
    if (!b.data || b.data === "[DONE]") continue;
    const ev = JSON.parse(b.data) as Record<string, any>;
    const choice = ev.choices?.[0];
    const piece = choice?.delta?.content;
    if (typeof piece === "string" && piece) {
      if (Number.isNaN(first)) first = b.at;
      text += piece;
    } else if (Array.isArray(choice?.delta?.tool_calls) && Number.isNaN(first)) first = b.at;
    if (choice?.finish_reason) {
      stop = choice.finish_reason;
      end = b.at;
    }
    if (ev.usage) usage = ev.usage;
    // llama-server: its per-request timings (cache_n = prompt tokens reused from the slot).
    if (ev.timings) timings = ev.timings;
  }
  if (usage.prompt_tokens === undefined && timings.prompt_n !== undefined) {
    usage = { prompt_tokens: (timings.prompt_n ?? 0) + (timings.cache_n ?? 0), completion_tokens: timings.predicted_n, prompt_tokens_details: { cached_tokens: timings.cache_n ?? 0 } };
  }
  if (timings.cache_n !== undefined && !usage.prompt_tokens_details?.cached_tokens) usage = { ...usage, prompt_tokens_details: { cached_tokens: timings.cache_n } };
  return {
    ttftMs: first - t0,
    decodeMs: end - first,
    totalMs: end - t0,
    inputTokens: usage.prompt_tokens ?? Number.NaN,
    outputTokens: usage.completion_tokens ?? Number.NaN,
    cachedTokens: usage.prompt_tokens_details?.cached_tokens ?? 0,
    text,
    stop,
  };
}

/** The in-process mlx-lm baseline: one long-lived Python process, one JSON line per request. */
export class EngineBaseline {
  private proc: Bun.Subprocess<"pipe", "pipe", "pipe"> | null = null;
  private lines: AsyncIterator<string> | null = null;
  private stderr: () => string = () => "";

  constructor(
    private readonly python: string,
    private readonly modelDir: string,
    private readonly env?: Record<string, string>,
  ) {}

  get pid(): number | null {
    return this.proc?.pid ?? null;
  }

  async start(): Promise<void> {
    this.proc = track(Bun.spawn([this.python, join(import.meta.dir, "..", "engine_baseline.py"), this.modelDir], {
      ...(this.env ? { env: { ...process.env, ...this.env } } : {}),
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    }));
    this.stderr = drain(this.proc.stderr);
    this.lines = lineReader(this.proc.stdout);
    const ready = await this.next();
    if (!ready.ready) throw new Error(`baseline did not start: ${JSON.stringify(ready)}`);
  }

  private async next(): Promise<Record<string, any>> {
    const r = await this.lines!.next();
    if (r.done) throw new Error(`baseline exited: ${this.stderr().slice(-2000)}`);
    return JSON.parse(r.value);
  }

  async generate(messages: ChatMessage[], tools: ToolSpec[] | undefined, maxTokens: number): Promise<RunTiming> {
    this.proc!.stdin.write(`${JSON.stringify({ messages, tools: tools ?? null, max_tokens: maxTokens })}\n`);
    await this.proc!.stdin.flush();
    const r = await this.next();
    return {
      ttftMs: (r.ttft_s ?? Number.NaN) * 1000,
      decodeMs: (r.decode_s ?? Number.NaN) * 1000,
      totalMs: r.total_s * 1000,
      inputTokens: r.prompt_tokens,
      outputTokens: r.output_tokens,
      cachedTokens: 0,
      text: r.text,
      stop: null,
    };
  }

  async stop(): Promise<void> {
    if (!this.proc) return;
    this.proc.stdin.end();
    await stopProc(this.proc);
    this.proc = null;
  }
}

/**
 * Diagnostic contender: Pensieve's own worker (python_bridge/mlx_inference.py) driven over its
 * JSON-lines protocol with no Bun server and no HTTP, to split the overhead between the two.
 */
export class WorkerDirect {
  private proc: Bun.Subprocess<"pipe", "pipe", "pipe"> | null = null;
  private lines: AsyncIterator<string> | null = null;
  private stderr: () => string = () => "";
  private seq = 0;

  constructor(
    private readonly python: string,
    private readonly script: string,
    private readonly modelDir: string,
    private readonly env?: Record<string, string>,
  ) {}

  private async next(): Promise<Record<string, any>> {
    const r = await this.lines!.next();
    if (r.done) throw new Error(`worker exited: ${this.stderr().slice(-2000)}`);
    return JSON.parse(r.value);
  }

  async start(): Promise<void> {
    this.proc = track(Bun.spawn([this.python, this.script], { ...(this.env ? { env: { ...process.env, ...this.env } } : {}), stdin: "pipe", stdout: "pipe", stderr: "pipe" }));
    this.stderr = drain(this.proc.stderr);
    this.lines = lineReader(this.proc.stdout);
    // The server's own load: every tuning value from src/config.ts, as MlxEngine sends it.
    const fields = loadFields({ python: this.python, script: this.script, model: this.modelDir, ...engineTuning(serveDefaults()) });
    this.proc.stdin.write(`${JSON.stringify({ v: 1, id: "load", cmd: "load", ...fields })}\n`);
    await this.proc.stdin.flush();
    for (;;) {
      const m = await this.next();
      if (m.type === "loaded") return;
      if (m.type === "error") throw new Error(`worker load failed: ${JSON.stringify(m)}`);
    }
  }

  async generate(messages: ChatMessage[], tools: ToolSpec[] | undefined, maxTokens: number): Promise<RunTiming> {
    const id = `b${++this.seq}`;
    const t0 = performance.now();
    this.proc!.stdin.write(`${JSON.stringify({ v: 1, id, cmd: "generate", messages, ...(tools ? { tools } : {}), max_tokens: maxTokens, temperature: 0 })}\n`);
    await this.proc!.stdin.flush();
    let first = Number.NaN;
    let text = "";
    let prompt = Number.NaN;
    for (;;) {
      const m = await this.next();
      if (m.id !== id) continue;
      if (m.type === "started") prompt = m.prompt_tokens;
      else if (m.type === "delta" && m.text) {
        if (Number.isNaN(first)) first = performance.now();
        text += m.text;
      } else if (m.type === "done") {
        const end = performance.now();
        return { ttftMs: first - t0, decodeMs: end - first, totalMs: end - t0, inputTokens: prompt, outputTokens: m.completion_tokens, cachedTokens: m.cached_tokens ?? 0, text, stop: m.finish_reason };
      } else if (m.type === "error") throw new Error(`worker error: ${JSON.stringify(m)}`);
    }
  }

  async stop(): Promise<void> {
    if (!this.proc) return;
    this.proc.stdin.end();
    await stopProc(this.proc);
    this.proc = null;
  }
}

async function* lineReader(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of chunks(stream)) {
    buf += dec.decode(chunk, { stream: true });
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim()) yield line;
    }
  }
}
