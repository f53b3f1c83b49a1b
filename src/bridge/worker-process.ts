/**
 * One spawned worker process: JSON lines out on stdin, replies in on stdout,
 * routed by id. Knows nothing about queues or models.
 */

import type { Subprocess } from "bun";
import type { Logger } from "../log";
import { EngineError, EngineTimeoutError, WorkerCrashedError } from "../engine/errors";
import { LineDecoder } from "./line-decoder";
import {
  type HelloMessage,
  PROTOCOL_VERSION,
  type WorkerMessage,
  engineErrorFromReply,
  parseWorkerLine,
  readAll,
  stderrLogger,
} from "./protocol";
import { StderrTail, type StderrTailOptions } from "./stderr-tail";

export interface WorkerProcessOptions {
  /** Interpreter, e.g. .venv/bin/python (tests pass the bun binary). */
  python: string;
  /** Worker script, e.g. python_bridge/mlx_inference.py. */
  script: string;
  args?: string[];
  /** Added to the server's environment. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** How long to wait for `hello`. */
  helloTimeoutMs: number;
  /** Longest stdout line accepted, in characters. */
  maxLineLength: number;
  /** After the process exits, how long its pipes may take to drain before the exit is handled. */
  exitDrainMs: number;
  stderr: StderrTailOptions;
  logger?: Logger;
  /** What errors and logs call it (default "model worker"). */
  name?: string;
}

/** Receives the replies to one command. */
export interface ReplyHandler {
  /** Each message carrying this command's id; return true when it is the last one. */
  onMessage(msg: WorkerMessage): boolean;
  /** The worker died, broke protocol or was stopped before the last message. */
  onFailure(err: EngineError): void;
}

/** Why the process ended; `expected` is false for crashes, kills and protocol errors. */
export interface WorkerExit {
  expected: boolean;
  error: EngineError;
}

type Proc = Subprocess<"pipe", "pipe", "pipe">;

/** A running worker. Create with `WorkerProcess.start`. */
export class WorkerProcess {
  private readonly proc: Proc;
  private readonly tail: StderrTail;
  private readonly log: Logger;
  private readonly name: string;
  private readonly pending = new Map<string, ReplyHandler>();
  private nextId = 1;
  private failure: EngineError | null = null;
  private stopping = false;
  private helloWaiter: { resolve(m: HelloMessage): void; reject(e: EngineError): void } | null = null;
  private readonly stdoutDone: Promise<void>;
  private readonly stderrDone: Promise<void>;
  /** Resolves once the process has exited and every pending handler has been failed. */
  readonly closed: Promise<WorkerExit>;
  hello: HelloMessage | null = null;

  private constructor(private readonly opts: WorkerProcessOptions) {
    this.log = opts.logger ?? stderrLogger;
    this.name = opts.name ?? "model worker";
    this.tail = new StderrTail(opts.stderr);
    this.proc = Bun.spawn([opts.python, opts.script, ...(opts.args ?? [])], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
      cwd: opts.cwd,
      // Unbuffered, UTF-8 stdio so protocol lines and crash logs are never held back or mis-encoded.
      env: { ...process.env, PYTHONUNBUFFERED: "1", PYTHONIOENCODING: "utf-8", ...opts.env },
    });
    this.stdoutDone = this.pumpStdout();
    this.stderrDone = this.tail.drain(this.proc.stderr);
    this.closed = this.watchExit();
  }

  /** Spawns the worker and waits for its `hello`. Throws WorkerCrashedError if it never comes. */
  static async start(opts: WorkerProcessOptions): Promise<WorkerProcess> {
    let w: WorkerProcess;
    try {
      w = new WorkerProcess(opts);
    } catch (err) {
      // Bun.spawn throws synchronously when the interpreter is missing or not executable.
      throw new WorkerCrashedError(`cannot start the ${opts.name ?? "model worker"} with ${opts.python}: ${(err as Error).message}`);
    }
    const timeoutMs = opts.helloTimeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await new Promise<HelloMessage>((resolve, reject) => {
        w.helloWaiter = { resolve, reject };
        if (w.hello) resolve(w.hello);
        if (w.failure) reject(w.failure);
        timer = setTimeout(() => {
          reject(w.crash(`did not say hello within ${timeoutMs} ms`));
        }, timeoutMs);
      });
    } catch (err) {
      w.kill("no hello");
      await w.closed;
      throw err;
    } finally {
      clearTimeout(timer);
      w.helloWaiter = null;
    }
    return w;
  }

  get pid(): number {
    return this.proc.pid;
  }

  /** False once the worker has exited, been killed or broken protocol. */
  get alive(): boolean {
    return this.failure === null;
  }

  stderrTail(): string[] {
    return this.tail.lines();
  }

  /**
   * Sends a command and routes its replies to `handler`. Returns the id.
   * Throws the worker's failure if it is already dead.
   */
  send(cmd: string, fields: Record<string, unknown>, handler: ReplyHandler): string {
    if (this.failure) throw this.failure;
    const id = String(this.nextId++);
    this.pending.set(id, handler);
    try {
      this.write({ ...fields, v: PROTOCOL_VERSION, id, cmd });
    } catch (err) {
      this.pending.delete(id);
      throw this.crash(`could not be written to (${(err as Error).message})`);
    }
    return id;
  }

  /**
   * Sends a command and resolves with its single reply. An `error` reply rejects
   * with the mapped engine error; no reply within `timeoutMs` rejects with EngineTimeoutError.
   */
  request(cmd: string, fields: Record<string, unknown> = {}, timeoutMs?: number): Promise<WorkerMessage> {
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const id = this.send(cmd, fields, {
        onMessage: (msg) => {
          clearTimeout(timer);
          if (msg.type === "error") reject(engineErrorFromReply(msg));
          else resolve(msg);
          return true;
        },
        onFailure: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new EngineTimeoutError(`worker did not answer ${cmd} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
  }

  /** Forgets a command's handler, e.g. after a timeout; later replies are ignored. */
  forget(id: string): void {
    this.pending.delete(id);
  }

  /** SIGKILLs the worker now; pending commands fail with WorkerCrashedError(reason). */
  kill(reason: string): void {
    this.fail(this.crash(`was killed: ${reason}`));
    this.signal("SIGKILL");
  }

  /**
   * Asks the worker to shut down, then SIGTERM after `graceMs`, then SIGKILL after
   * `termMs`. Pending commands fail with EngineError("worker stopped").
   */
  async stop(graceMs: number, termMs: number): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.stopping = true;
      if (this.failure === null) {
        try {
          this.send("shutdown", {}, { onMessage: () => true, onFailure: () => {} });
          // EOF also tells a worker stuck before its read loop to leave.
          void Promise.resolve(this.proc.stdin.end()).catch(() => {});
        } catch {
          // Already unwritable: escalate below.
        }
      }
      if (!(await this.waitExit(graceMs))) {
        this.log.warn("worker ignored shutdown; sending SIGTERM", { pid: this.pid });
        this.signal("SIGTERM");
        if (!(await this.waitExit(termMs))) {
          this.log.warn("worker ignored SIGTERM; sending SIGKILL", { pid: this.pid });
          this.signal("SIGKILL");
        }
      }
    }
    await this.closed;
  }

  private write(obj: Record<string, unknown>): void {
    const sink = this.proc.stdin;
    const r = sink.write(`${JSON.stringify(obj)}\n`);
    if (r instanceof Promise) r.catch(() => {});
    const f = sink.flush();
    // A failed async write means the worker is gone; the exit watcher reports it.
    if (f instanceof Promise) f.catch(() => {});
  }

  private signal(sig: "SIGTERM" | "SIGKILL"): void {
    try {
      this.proc.kill(sig);
    } catch {
      // Already reaped.
    }
  }

  private async waitExit(ms: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
    const ok = await Promise.race([this.proc.exited.then(() => true as const), timeout]);
    clearTimeout(timer);
    return ok;
  }

  private async pumpStdout(): Promise<void> {
    const decoder = new LineDecoder((line) => this.onLine(line), {
      maxLineLength: this.opts.maxLineLength,
      onOverflow: (o) => this.violation(`stdout line over ${o.length} characters`),
    });
    await readAll(this.proc.stdout, (chunk) => decoder.push(chunk));
    decoder.flush();
  }

  private onLine(line: string): void {
    if (this.failure || line.trim() === "") return;
    const parsed = parseWorkerLine(line);
    if (!parsed.ok) return this.violation(parsed.violation);
    const msg = parsed.msg;
    if (this.hello === null) {
      if (msg.type !== "hello") return this.violation(`first message was ${msg.type}, not hello`);
      this.hello = msg as HelloMessage;
      this.helloWaiter?.resolve(this.hello);
      return;
    }
    if (typeof msg.id !== "string") {
      this.log.warn("worker message without an id", { type: msg.type, code: msg.code, message: msg.message });
      return;
    }
    const handler = this.pending.get(msg.id);
    if (!handler) {
      this.log.debug("reply for a forgotten command", { id: msg.id, type: msg.type });
      return;
    }
    let last = true;
    try {
      last = handler.onMessage(msg);
    } catch (err) {
      this.log.error("reply handler threw", { id: msg.id, error: String(err) });
    }
    if (last) this.pending.delete(msg.id);
  }

  /** Any protocol violation is treated as a crash: log, fail everything, kill. */
  private violation(reason: string): void {
    if (this.failure) return;
    // The reason may quote stdout (prompt text): it goes to the log, never into the error.
    this.log.error(`${this.name} broke protocol`, { pid: this.pid, reason });
    this.fail(this.crash("broke protocol"));
    this.signal("SIGKILL");
  }

  private fail(err: EngineError): void {
    if (this.failure) return;
    this.failure = err;
    this.helloWaiter?.reject(err);
    const handlers = [...this.pending.values()];
    this.pending.clear();
    for (const h of handlers) {
      try {
        h.onFailure(err);
      } catch (e) {
        this.log.error("failure handler threw", { error: String(e) });
      }
    }
  }

  private async watchExit(): Promise<WorkerExit> {
    const code = await this.proc.exited;
    // Let the pipes drain so replies written just before death are routed, and the tail is complete.
    // Capped: a grandchild holding the pipes open must not block crash handling.
    await Promise.race([Promise.all([this.stdoutDone, this.stderrDone]), Bun.sleep(this.opts.exitDrainMs)]);
    const how = this.proc.signalCode ? `was killed by ${this.proc.signalCode}` : `crashed (exit code ${code})`;
    const expected = this.stopping && this.failure === null;
    const when = this.hello === null ? " before saying hello" : "";
    if (expected) this.fail(new EngineError("worker stopped"));
    else this.fail(this.crash(`${how}${when}`));
    const exit: WorkerExit = { expected, error: this.failure ?? new EngineError("worker stopped") };
    // The one place a crash's stderr is kept: the server log, with the pid.
    if (!expected) {
      this.log.error(`${this.name} ended`, { pid: this.pid, reason: exit.error.message, stderr: this.stderrTail() });
    }
    return exit;
  }

  /** A client-safe crash error ("the model worker crashed (exit code 1); see the server log"). */
  private crash(what: string): WorkerCrashedError {
    return new WorkerCrashedError(`the ${this.name} ${what}; see the server log`, this.stderrTail());
  }
}
