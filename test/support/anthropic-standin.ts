/**
 * A minimal Anthropic-shaped responder for tests: answers every /v1/messages call with one
 * fixed, known text (streamed or not), answers the probes Claude Code makes, and records
 * every request it sees. Listens on loopback, port 0. No model, no Python.
 */

/** One request as the stand-in received it. */
export interface RecordedRequest {
  method: string;
  /** Path plus query string, e.g. "/v1/messages?beta=true". */
  path: string;
  /** Header names lower-cased. */
  headers: Record<string, string>;
  /** Parsed JSON when the body was JSON, the raw text otherwise, undefined when empty. */
  body: unknown;
}

/** Options for {@link startAnthropicStandin}. */
export interface StandinOptions {
  /** The text every /v1/messages answer carries. */
  answer?: string;
  /** Body of GET /health; defaults to a healthy server with memory status "safe". */
  health?: unknown;
  /** HTTP status of GET /health (default 200). */
  healthStatus?: number;
  /** Extra headers on GET /health, e.g. { "x-memory-status": "warning" }. */
  healthHeaders?: Record<string, string>;
  /** Awaited before each /v1/messages answer: lets a test hold a reply until something happened. */
  beforeAnswer?: (req: RecordedRequest) => Promise<void> | void;
}

/** A running stand-in. */
export interface AnthropicStandin {
  /** Base URL, e.g. "http://127.0.0.1:41234" (no trailing slash). */
  url: string;
  port: number;
  answer: string;
  /** Every request seen so far, in arrival order. */
  requests: RecordedRequest[];
  /** Stops listening and closes open connections. */
  stop(): Promise<void>;
}

const encoder = new TextEncoder();

function sseFrame(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** Splits the answer into a few deltas so clients must concatenate. */
function chunks(text: string): string[] {
  const parts = text.match(/\S+\s*|\s+/g) ?? [text];
  return parts.length > 0 ? parts : [""];
}

function messageId(n: number): string {
  return `msg_standin_${String(n).padStart(6, "0")}`;
}

function anthropicError(status: number, type: string, message: string): Response {
  return Response.json({ type: "error", error: { type, message }, request_id: "req_standin" }, { status });
}

function streamAnswer(id: string, model: string, answer: string): Response {
  const usageStart = { input_tokens: 10, output_tokens: 1 };
  const frames = [
    sseFrame("message_start", {
      type: "message_start",
      message: {
        id, type: "message", role: "assistant", model, content: [],
        stop_reason: null, stop_sequence: null, usage: usageStart,
      },
    }),
    sseFrame("ping", { type: "ping" }),
    sseFrame("content_block_start", {
      type: "content_block_start", index: 0, content_block: { type: "text", text: "" },
    }),
    ...chunks(answer).map((text) => sseFrame("content_block_delta", {
      type: "content_block_delta", index: 0, delta: { type: "text_delta", text },
    })),
    sseFrame("content_block_stop", { type: "content_block_stop", index: 0 }),
    sseFrame("message_delta", {
      type: "message_delta",
      delta: { stop_reason: "end_turn", stop_sequence: null },
      usage: { input_tokens: 10, output_tokens: chunks(answer).length },
    }),
    sseFrame("message_stop", { type: "message_stop" }),
  ];
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const f of frames) controller.enqueue(encoder.encode(f));
      controller.close();
    },
  });
  return new Response(body, {
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache", "request-id": "req_standin" },
  });
}

function jsonAnswer(id: string, model: string, answer: string): Response {
  return Response.json({
    id, type: "message", role: "assistant", model,
    content: [{ type: "text", text: answer }],
    stop_reason: "end_turn", stop_sequence: null,
    usage: { input_tokens: 10, output_tokens: chunks(answer).length },
  }, { headers: { "request-id": "req_standin" } });
}

async function readBody(req: Request): Promise<unknown> {
  const text = await req.text();
  if (text === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** Starts a stand-in on 127.0.0.1, port 0. */
export function startAnthropicStandin(opts: StandinOptions = {}): AnthropicStandin {
  const answer = opts.answer ?? "Hello from the stand-in.";
  const requests: RecordedRequest[] = [];
  let served = 0;

  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    // Seconds; a test may hold an answer (beforeAnswer) longer than Bun's 10 s default.
    idleTimeout: 120,
    async fetch(req) {
      const url = new URL(req.url);
      const headers: Record<string, string> = {};
      req.headers.forEach((v, k) => { headers[k.toLowerCase()] = v; });
      const body = await readBody(req);
      const recorded: RecordedRequest = { method: req.method, path: url.pathname + url.search, headers, body };
      requests.push(recorded);

      const route = `${req.method} ${url.pathname}`;
      switch (route) {
        case "GET /health":
          return Response.json(opts.health ?? {
            status: "ok", model: "standin", uptime_s: 1, memory: { status: "safe", available_gb: 16 },
          }, { status: opts.healthStatus ?? 200, headers: opts.healthHeaders ?? {} });
        case "HEAD /api/hello":
        case "GET /api/hello":
          return new Response(req.method === "HEAD" ? null : "ok", { status: 200 });
        case "GET /v1/models":
          return Response.json({
            data: [{ type: "model", id: "claude-standin", display_name: "Stand-in", created_at: "2025-01-01T00:00:00Z" }],
            has_more: false, first_id: "claude-standin", last_id: "claude-standin",
          });
        case "POST /v1/messages/count_tokens":
          return Response.json({ input_tokens: 10 });
        case "POST /v1/messages": {
          await opts.beforeAnswer?.(recorded);
          const b = (body ?? {}) as { model?: unknown; stream?: unknown };
          const model = typeof b.model === "string" ? b.model : "claude-standin";
          served += 1;
          const id = messageId(served);
          return b.stream === true ? streamAnswer(id, model, answer) : jsonAnswer(id, model, answer);
        }
        default:
          return anthropicError(404, "not_found_error", `No route for ${route}`);
      }
    },
  });

  const port = server.port ?? 0;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    answer,
    requests,
    async stop() {
      await server.stop(true);
    },
  };
}
