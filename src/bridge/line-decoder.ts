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
  /** Longest accepted line, in UTF-16 code units. */
  maxLineLength: number;
  /** Called once per over-long line; that line is then dropped up to its newline. */
  onOverflow?: (overflow: LineOverflow) => void;
  /**
   * "lf" (default): lines end at LF, a CR before it is stripped, a lone CR is kept.
   * "any": CRLF, LF and a lone CR each end a line (Server-Sent Events).
   */
  lineEnds?: "lf" | "any";
}

// How much of an over-long line a log shows (not a setting).
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
  private readonly anyEnd: boolean;
  private pending = "";
  /** "any" mode: the last chunk ended in CR, so an LF opening the next one ends nothing. */
  private afterCr = false;
  /** True while dropping the rest of an over-long line. */
  private skipping = false;

  constructor(
    private readonly onLine: (line: string) => void,
    options: LineDecoderOptions,
  ) {
    this.maxLineLength = options.maxLineLength;
    this.onOverflow = options.onOverflow;
    this.anyEnd = options.lineEnds === "any";
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
    this.afterCr = false;
  }

  /** Index of the next line end at or after `from`, and the index after it; null when none. */
  private nextEnd(text: string, from: number): [number, number] | null {
    if (!this.anyEnd) {
      const nl = text.indexOf("\n", from);
      return nl === -1 ? null : [nl, nl + 1];
    }
    for (let i = from; i < text.length; i++) {
      const ch = text.charCodeAt(i);
      if (ch === 10) return [i, i + 1];
      if (ch !== 13) continue;
      if (i + 1 < text.length) return [i, text.charCodeAt(i + 1) === 10 ? i + 2 : i + 1];
      this.afterCr = true; // a CR ending the chunk: its LF, if any, opens the next one
      return [i, i + 1];
    }
    return null;
  }

  private consume(text: string): void {
    let start = 0;
    if (this.afterCr && text.length) {
      this.afterCr = false;
      if (text.startsWith("\n")) start = 1;
    }
    for (;;) {
      const end = this.nextEnd(text, start);
      if (end === null) break;
      const piece = text.slice(start, end[0]);
      start = end[1];
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
