/**
 * A byte-level Server-Sent Events decoder (WHATWG event-stream rules): any chunk boundaries,
 * UTF-8 split across chunks, LF / CRLF / CR line ends, comments, multi-line data.
 */

/** One dispatched SSE event, or a comment line (mlx_lm.server sends `: keepalive N/M`). */
export type SseItem = { kind: "event"; event: string; data: string } | { kind: "comment"; text: string };

/** Incremental decoder: push() byte chunks as they arrive, end() once the body is done. */
export class SseDecoder {
  private readonly utf8 = new TextDecoder("utf-8");
  private buf = "";
  /** A chunk ended in CR: if the next one starts with LF, that LF belongs to the same line end. */
  private pendingCr = false;
  private data: string[] = [];
  private event = "";

  /** Feed bytes; returns the items completed by them. */
  push(bytes: Uint8Array): SseItem[] {
    return this.feed(this.utf8.decode(bytes, { stream: true }));
  }

  /** End of stream: flush an unterminated last line and a pending event. */
  end(): SseItem[] {
    const out = this.feed(this.utf8.decode());
    if (this.buf.length) {
      this.line(this.buf, out);
      this.buf = "";
    }
    this.dispatch(out);
    return out;
  }

  private feed(text: string): SseItem[] {
    const out: SseItem[] = [];
    if (this.pendingCr && text.length) {
      this.pendingCr = false;
      if (text.startsWith("\n")) text = text.slice(1);
    }
    this.buf += text;
    let start = 0;
    for (let i = 0; i < this.buf.length; i++) {
      const ch = this.buf.charCodeAt(i);
      if (ch !== 10 && ch !== 13) continue;
      this.line(this.buf.slice(start, i), out);
      if (ch === 13) {
        if (i + 1 < this.buf.length) {
          if (this.buf.charCodeAt(i + 1) === 10) i++;
        } else {
          this.pendingCr = true;
        }
      }
      start = i + 1;
    }
    this.buf = this.buf.slice(start);
    return out;
  }

  private line(line: string, out: SseItem[]): void {
    if (line === "") return this.dispatch(out);
    if (line.startsWith(":")) {
      out.push({ kind: "comment", text: line.slice(1).trimStart() });
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

  private dispatch(out: SseItem[]): void {
    if (this.data.length) out.push({ kind: "event", event: this.event || "message", data: this.data.join("\n") });
    this.data = [];
    this.event = "";
  }
}
