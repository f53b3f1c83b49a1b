/**
 * Keeps the worker's last stderr lines so a crash can be explained, and
 * optionally forwards every line to the server's own stderr.
 */

import { LineDecoder } from "./line-decoder";
import { readAll } from "./protocol";

export interface StderrTailOptions {
  /** Lines kept. */
  maxLines: number;
  /** Longer lines are cut to this many characters. */
  maxLineLength: number;
  /** Receives each line already prefixed; `true` means the server's stderr. */
  forward?: boolean | ((text: string) => void);
  /** Put before forwarded lines (default "[worker] "). */
  prefix?: string;
}

/** Fixed-size ring buffer of stderr lines. */
export class StderrTail {
  private readonly ring: string[];
  private next = 0;
  private count = 0;
  private readonly maxLineLength: number;
  private readonly forward: ((text: string) => void) | null;
  private readonly prefix: string;

  constructor(options: StderrTailOptions) {
    this.ring = new Array<string>(Math.max(1, options.maxLines));
    this.maxLineLength = options.maxLineLength;
    this.prefix = options.prefix ?? "[worker] ";
    const fwd = options.forward;
    this.forward = fwd === true ? (text) => process.stderr.write(text) : typeof fwd === "function" ? fwd : null;
  }

  /** Records one line (without its newline). */
  push(line: string): void {
    const kept = line.length > this.maxLineLength ? `${line.slice(0, this.maxLineLength)}…` : line;
    this.ring[this.next] = kept;
    this.next = (this.next + 1) % this.ring.length;
    this.count = Math.min(this.count + 1, this.ring.length);
    // The Python worker already tags its own lines "[worker]"; don't tag them twice.
    const tagged = this.prefix && kept.startsWith(this.prefix.trim()) ? kept : `${this.prefix}${kept}`;
    this.forward?.(`${tagged}\n`);
  }

  /** The kept lines, oldest first. */
  lines(): string[] {
    const out: string[] = [];
    const start = (this.next - this.count + this.ring.length) % this.ring.length;
    for (let i = 0; i < this.count; i++) out.push(this.ring[(start + i) % this.ring.length] as string);
    return out;
  }

  clear(): void {
    this.next = 0;
    this.count = 0;
  }

  /** Reads a stderr stream to its end into this tail. Never rejects. */
  async drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    // Only a bound on buffering: kept lines are cut to maxLineLength anyway.
    const decoder = new LineDecoder((line) => this.push(line), {
      maxLineLength: 64 * 1024,
      onOverflow: (o) => this.push(`${o.head} … [stderr line over ${o.length} characters, cut]`),
    });
    await readAll(stream, (chunk) => decoder.push(chunk));
    decoder.flush();
  }
}
