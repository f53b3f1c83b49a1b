/**
 * A byte-level Server-Sent Events decoder (WHATWG event-stream rules) on the bridge's
 * LineDecoder: any chunk boundaries, UTF-8 split across chunks, LF / CRLF / CR line ends,
 * comments, multi-line data, and a cap on the length of one line.
 */

import { LineDecoder, type LineOverflow } from "../bridge/line-decoder";

/** One dispatched SSE event, or a comment line (mlx_lm.server sends `: keepalive N/M`). */
export type SseItem = { kind: "event"; event: string; data: string } | { kind: "comment"; text: string };

export interface SseDecoderOptions {
  /** Longest line accepted, in characters. */
  maxLineLength: number;
  /** An over-long line is dropped and reported here (default: push() throws LineTooLongError). */
  onOverflow?: (overflow: LineOverflow) => void;
}

/** Incremental decoder: push() byte chunks as they arrive, end() once the body is done. */
export class SseDecoder {
  private readonly lines: LineDecoder;
  private out: SseItem[] = [];
  private data: string[] = [];
  private event = "";

  constructor(opts: SseDecoderOptions) {
    this.lines = new LineDecoder((line) => this.line(line), { ...opts, lineEnds: "any" });
  }

  /** Feed bytes; returns the items completed by them. */
  push(bytes: Uint8Array): SseItem[] {
    this.lines.push(bytes);
    return this.take();
  }

  /** End of stream: flush an unterminated last line and a pending event. */
  end(): SseItem[] {
    this.lines.flush();
    this.dispatch();
    return this.take();
  }

  private take(): SseItem[] {
    const items = this.out;
    this.out = [];
    return items;
  }

  private line(line: string): void {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) {
      this.out.push({ kind: "comment", text: line.slice(1).trimStart() });
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    // Some llama.cpp builds stream failures as a bare `error: {...}` line; keep it as an event.
    else if (field === "error") {
      this.event = "error";
      this.data.push(value);
    }
  }

  private dispatch(): void {
    if (this.data.length) this.out.push({ kind: "event", event: this.event || "message", data: this.data.join("\n") });
    this.data = [];
    this.event = "";
  }
}
