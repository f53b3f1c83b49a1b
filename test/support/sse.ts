/**
 * A strict SSE parser for raw-wire assertions, and a checker of Anthropic's Messages
 * stream grammar. Both throw a precise error on the first violation.
 */

import { LineDecoder } from "../../src/bridge/line-decoder";
import { upstreamDefaults } from "../../src/config";

/** One event as it came off the wire: its `event:` name and its `data:` JSON. */
export interface WireEvent {
  event: string;
  data: { type: string } & Record<string, any>;
  /** The exact text of the event, for error messages. */
  raw: string;
}

/**
 * Strict: every event is `event: NAME\ndata: JSON\n\n` (LF only, one data line, JSON whose
 * `type` repeats the name). SSE comments (`:`) are allowed; any other field is not.
 */
export function parseEventBlock(block: string): WireEvent | null {
  if (block.includes("\r")) throw new Error(`SSE: CR in event (Anthropic uses LF only): ${JSON.stringify(block)}`);
  let event: string | undefined;
  let data: string | undefined;
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const m = /^(event|data): (.*)$/.exec(line);
    if (!m) throw new Error(`SSE: malformed line ${JSON.stringify(line)} in ${JSON.stringify(block)}`);
    if (m[1] === "event") {
      if (event !== undefined) throw new Error(`SSE: two event lines in ${JSON.stringify(block)}`);
      event = m[2]!;
    } else {
      if (data !== undefined) throw new Error(`SSE: more than one data line in ${JSON.stringify(block)}`);
      data = m[2]!;
    }
  }
  if (event === undefined && data === undefined) return null; // comment-only block
  if (event === undefined || data === undefined) throw new Error(`SSE: event without both event and data lines: ${JSON.stringify(block)}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw new Error(`SSE: data is not JSON: ${JSON.stringify(data)}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error(`SSE: data is not a JSON object: ${data}`);
  const type = (parsed as { type?: unknown }).type;
  if (type !== event) throw new Error(`SSE: event name ${JSON.stringify(event)} but data.type ${JSON.stringify(type)}`);
  return { event, data: parsed as WireEvent["data"], raw: block };
}

/**
 * Splits a body into event blocks on the server's own LineDecoder (src/bridge/line-decoder.ts),
 * strictly: LF only, one blank line between events.
 */
class BlockReader {
  private readonly lines: LineDecoder;
  private block: string[] = [];
  private ready: WireEvent[] = [];

  constructor() {
    this.lines = new LineDecoder((line) => this.line(line), { maxLineLength: upstreamDefaults.maxLineLength });
  }

  push(bytes: Uint8Array): WireEvent[] {
    // CR never occurs inside a UTF-8 sequence, so the raw bytes tell.
    if (bytes.includes(13)) throw new Error(`SSE: CR in event (Anthropic uses LF only): ${JSON.stringify(new TextDecoder().decode(bytes))}`);
    this.lines.push(bytes);
    const out = this.ready;
    this.ready = [];
    return out;
  }

  /** End of body: an event left open is an error. */
  end(): void {
    this.lines.flush();
    if (this.block.length) throw new Error(`SSE: body ends inside an event: ${JSON.stringify(this.block.join("\n"))}`);
  }

  private line(line: string): void {
    if (line !== "") {
      this.block.push(line);
      return;
    }
    if (!this.block.length) throw new Error("SSE: empty event block (three newlines in a row)");
    const ev = parseEventBlock(this.block.join("\n"));
    this.block = [];
    if (ev) this.ready.push(ev);
  }
}

/** Parses a complete SSE body: it must end with the blank line that closes its last event. */
export function parseSse(text: string): WireEvent[] {
  if (text.length === 0) throw new Error("SSE: empty body");
  if (!text.endsWith("\n\n")) throw new Error(`SSE: body does not end with a blank line: ...${JSON.stringify(text.slice(-80))}`);
  const reader = new BlockReader();
  const out = reader.push(new TextEncoder().encode(text));
  reader.end();
  return out;
}

/** Yields events as they arrive from a response body (strict, as parseSse). */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<WireEvent> {
  const blocks = new BlockReader();
  const reader = body.getReader();
  try {
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      for (const ev of blocks.push(r.value)) yield ev;
    }
  } finally {
    // A consumer that stops early (break, abort) releases the body, which closes the connection.
    await reader.cancel().catch(() => {});
  }
  blocks.end();
}

const STOP_REASONS = new Set(["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"]);
const DELTA_FOR_BLOCK: Record<string, readonly string[]> = {
  text: ["text_delta"],
  tool_use: ["input_json_delta"],
  thinking: ["thinking_delta", "signature_delta"],
  redacted_thinking: [],
};

export interface StreamBlock {
  type: string;
  /** text / thinking text, or the concatenated partial_json of a tool_use. */
  text: string;
  start: Record<string, any>;
}

/** What a valid stream said, for further assertions. */
export interface StreamSummary {
  /** Event names in order (pings included). */
  names: string[];
  message: Record<string, any>;
  blocks: StreamBlock[];
  stopReason: string;
  stopSequence: string | null;
  /** The final (cumulative) usage from message_delta. */
  usage: Record<string, any>;
  pings: number;
  textDeltas: number;
  /** An `event: error` payload if the stream ended with one (only with allowError). */
  error?: Record<string, any>;
}

const isCount = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;

function fail(names: string[], why: string): never {
  throw new Error(`Anthropic stream: ${why}\n  events so far: ${names.join(" ")}`);
}

/**
 * Checks Anthropic's grammar: message_start first; ping anywhere before message_stop;
 * content blocks opened with consecutive indexes, one at a time, with deltas of their kind;
 * message_delta (stop_reason, cumulative usage) after the last block; message_stop last.
 * `complete: false` accepts a stream cut short by the client (a prefix of a valid stream).
 */
export function checkAnthropicStream(events: WireEvent[], opts: { complete?: boolean; allowError?: boolean } = {}): StreamSummary {
  const complete = opts.complete ?? true;
  const names: string[] = [];
  const blocks: StreamBlock[] = [];
  let message: Record<string, any> | undefined;
  let open: number | null = null;
  let stopReason: string | undefined;
  let stopSequence: string | null = null;
  let usage: Record<string, any> | undefined;
  let stopped = false;
  let pings = 0;
  let textDeltas = 0;
  let error: Record<string, any> | undefined;

  for (const { event, data } of events) {
    if (stopped || error) fail(names, `${event} after ${error ? "error" : "message_stop"}`);
    names.push(event);
    if (names.length === 1 && event !== "message_start") fail(names, `first event is ${event}, not message_start`);
    switch (event) {
      case "message_start": {
        if (names.length !== 1) fail(names, "second message_start");
        const m = data.message;
        if (m?.type !== "message" || m.role !== "assistant") fail(names, `bad message: ${JSON.stringify(m)}`);
        if (typeof m.id !== "string" || !m.id.startsWith("msg_")) fail(names, `bad message id ${m.id}`);
        if (typeof m.model !== "string") fail(names, "message.model missing");
        if (!Array.isArray(m.content) || m.content.length !== 0) fail(names, "message_start content must be []");
        if (m.stop_reason !== null || m.stop_sequence !== null) fail(names, "message_start must have null stop_reason/stop_sequence");
        if (!isCount(m.usage?.input_tokens) || !isCount(m.usage?.output_tokens)) fail(names, `bad start usage ${JSON.stringify(m.usage)}`);
        message = m;
        break;
      }
      case "ping":
        pings++;
        break;
      case "content_block_start": {
        if (open !== null) fail(names, `content_block_start while block ${open} is open`);
        if (stopReason !== undefined) fail(names, "content_block_start after message_delta");
        if (data.index !== blocks.length) fail(names, `content_block_start index ${data.index}, expected ${blocks.length}`);
        const cb = data.content_block;
        if (!cb || !(cb.type in DELTA_FOR_BLOCK)) fail(names, `unknown content block ${JSON.stringify(cb)}`);
        if (cb.type === "text" && cb.text !== "") fail(names, "text block must start empty");
        if (cb.type === "tool_use" && (typeof cb.id !== "string" || typeof cb.name !== "string" || JSON.stringify(cb.input) !== "{}"))
          fail(names, `bad tool_use start ${JSON.stringify(cb)}`);
        blocks.push({ type: cb.type, text: "", start: cb });
        open = data.index;
        break;
      }
      case "content_block_delta": {
        if (open === null || data.index !== open) fail(names, `delta for index ${data.index} but open block is ${open}`);
        const block = blocks[open]!;
        const d = data.delta;
        if (!DELTA_FOR_BLOCK[block.type]!.includes(d?.type)) fail(names, `${d?.type} in a ${block.type} block`);
        if (d.type === "text_delta") {
          if (typeof d.text !== "string") fail(names, "text_delta without text");
          block.text += d.text;
          textDeltas++;
        } else if (d.type === "input_json_delta") {
          if (typeof d.partial_json !== "string") fail(names, "input_json_delta without partial_json");
          block.text += d.partial_json;
        } else if (d.type === "thinking_delta") {
          if (typeof d.thinking !== "string") fail(names, "thinking_delta without thinking");
          block.text += d.thinking;
        } else if (typeof d.signature !== "string") fail(names, "signature_delta without signature");
        break;
      }
      case "content_block_stop": {
        if (open === null || data.index !== open) fail(names, `content_block_stop for index ${data.index} but open block is ${open}`);
        const block = blocks[open]!;
        if (block.type === "tool_use") {
          try {
            const input = JSON.parse(block.text === "" ? "{}" : block.text);
            if (typeof input !== "object" || input === null || Array.isArray(input)) throw new Error("not an object");
          } catch (e) {
            fail(names, `tool_use input is not a JSON object: ${block.text} (${e})`);
          }
        }
        open = null;
        break;
      }
      case "message_delta": {
        if (open !== null) fail(names, `message_delta while block ${open} is open`);
        if (stopReason !== undefined) fail(names, "second message_delta");
        const r = data.delta?.stop_reason;
        if (!STOP_REASONS.has(r)) fail(names, `bad stop_reason ${JSON.stringify(r)}`);
        const seq = data.delta?.stop_sequence ?? null;
        if (r === "stop_sequence" ? typeof seq !== "string" : seq !== null) fail(names, `stop_sequence ${JSON.stringify(seq)} with ${r}`);
        if (!isCount(data.usage?.output_tokens)) fail(names, `bad message_delta usage ${JSON.stringify(data.usage)}`);
        stopReason = r;
        stopSequence = seq;
        usage = data.usage;
        break;
      }
      case "message_stop":
        if (stopReason === undefined) fail(names, "message_stop before message_delta");
        stopped = true;
        break;
      case "error":
        if (!opts.allowError) fail(names, `error event: ${JSON.stringify(data)}`);
        if (typeof data.error?.type !== "string" || typeof data.error?.message !== "string") fail(names, `bad error event ${JSON.stringify(data)}`);
        error = data.error;
        break;
      default:
        fail(names, `unknown event ${event}`);
    }
  }
  if (!message) fail(names, "no message_start");
  if (complete && !stopped && !error) fail(names, "stream ended before message_stop");
  return {
    names,
    message,
    blocks,
    stopReason: stopReason ?? "",
    stopSequence,
    usage: usage ?? {},
    pings,
    textDeltas,
    ...(error ? { error } : {}),
  };
}

/** The names with consecutive repeats collapsed, e.g. "message_start ping content_block_start ...". */
export function shapeOf(names: readonly string[]): string {
  return names.filter((n, i) => n !== names[i - 1]).join(" ");
}
