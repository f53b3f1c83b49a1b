/**
 * Splits a byte stream into text lines. Chunks may break anywhere, including
 * inside a multi-byte UTF-8 character or between `\r` and `\n`.
 */

/** Reported when a line grows past the cap; the rest of that line is discarded. */
export interface LineOverflow {
  /** Characters seen when the cap was hit (the whole line may be longer). */
  length: number;
  /** The line's first characters, for logs. */
  head: string;
}

export interface LineDecoderOptions {
  /** Longest accepted line, in UTF-16 code units (default 8 Mi). */
  maxLineLength?: number;
  /** Called once per over-long line; that line is then dropped up to its newline. */
  onOverflow?: (overflow: LineOverflow) => void;
}

export const DEFAULT_MAX_LINE_LENGTH = 8 * 1024 * 1024;
const HEAD_LENGTH = 200;

/**
 * Incremental line decoder. `push` each chunk; `flush` at end of stream to get
 * a last line that had no trailing newline. A trailing `\r` is stripped from
 * every line. Empty lines are emitted as "".
 */
export class LineDecoder {
  private readonly decoder = new TextDecoder("utf-8");
  private readonly maxLineLength: number;
  private readonly onOverflow?: (overflow: LineOverflow) => void;
  private pending = "";
  /** True while dropping the rest of an over-long line. */
  private skipping = false;

  constructor(
    private readonly onLine: (line: string) => void,
    options: LineDecoderOptions = {},
  ) {
    this.maxLineLength = options.maxLineLength ?? DEFAULT_MAX_LINE_LENGTH;
    this.onOverflow = options.onOverflow;
  }

  /** Feeds one chunk; calls `onLine` for every line it completes. */
  push(chunk: Uint8Array): void {
    // stream: true keeps a split multi-byte sequence until the next chunk completes it.
    this.consume(this.decoder.decode(chunk, { stream: true }));
  }

  /** Ends the stream: emits a final unterminated line, if any, and resets. */
  flush(): void {
    this.consume(this.decoder.decode());
    if (!this.skipping && this.pending.length > 0) this.onLine(stripCr(this.pending));
    this.pending = "";
    this.skipping = false;
  }

  private consume(text: string): void {
    let start = 0;
    for (;;) {
      const nl = text.indexOf("\n", start);
      if (nl === -1) break;
      const piece = text.slice(start, nl);
      start = nl + 1;
      if (this.skipping) {
        this.skipping = false;
        this.pending = "";
        continue;
      }
      const line = this.pending.length ? this.pending + piece : piece;
      this.pending = "";
      const body = stripCr(line);
      if (body.length > this.maxLineLength) this.overflow(body);
      else this.onLine(body);
    }
    if (this.skipping || start >= text.length) return;
    this.pending += text.slice(start);
    // +1 allows a lone trailing "\r" that the next chunk's "\n" will strip.
    if (this.pending.length > this.maxLineLength + 1) {
      const text = this.pending;
      this.pending = "";
      this.skipping = true;
      this.overflow(text);
    }
  }

  private overflow(text: string): void {
    const info = { length: text.length, head: text.slice(0, HEAD_LENGTH) };
    if (this.onOverflow) this.onOverflow(info);
    else throw new LineTooLongError(info);
  }
}

/**
 * Thrown from `push`/`flush` on an over-long line when no `onOverflow` is given;
 * lines later in the same chunk are then lost.
 */
export class LineTooLongError extends Error {
  constructor(readonly overflow: LineOverflow) {
    super(`line longer than the limit (at least ${overflow.length} characters)`);
    this.name = "LineTooLongError";
  }
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}
