/**
 * The fake worker (test/support/fake-worker.ts), which the bridge's unit tests run, against the
 * real one (python_bridge, tiny model): one scripted session through WorkerProcess, and both must
 * answer with the same message types, in the same order, with the fields the server reads.
 * Every field the fake sends must also come from the real worker, so the fake cannot drift.
 */

import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import { engineTuning } from "../../src/bridge/mlx-engine-options";
import type { WorkerMessage } from "../../src/bridge/protocol";
import { loadFields } from "../../src/bridge/worker-info";
import { WorkerProcess } from "../../src/bridge/worker-process";
import { engineDefaults, serveDefaults } from "../../src/config";
import { REPO, testPython, tinyModelDir } from "../support/server-process";

// Loads a real model on a possibly loaded 2-core machine.
setDefaultTimeout(180_000);

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const MESSAGES = [{ role: "user", content: "hi" }];

/** One command of the session and every reply to it, in order. */
interface Exchange {
  cmd: string;
  replies: WorkerMessage[];
}

interface Transcript {
  hello: WorkerMessage;
  exchanges: Exchange[];
  exitCode: number | null;
}

/** Sends `cmd` and gathers its replies until the one that ends it (a generation's done). */
function exchange(w: WorkerProcess, cmd: string, fields: Record<string, unknown>, last: (m: WorkerMessage) => boolean): Promise<Exchange> {
  const replies: WorkerMessage[] = [];
  return new Promise((resolve, reject) => {
    w.send(cmd, fields, {
      onMessage: (msg) => {
        replies.push(msg);
        const end = last(msg) || msg.type === "error";
        if (end) resolve({ cmd, replies });
        return end;
      },
      onFailure: reject,
    });
  });
}

/** hello, load, generate (text), count_tokens, stats, cancel (of the finished generation), shutdown. */
async function session(python: string, script: string, model: string): Promise<Transcript> {
  const { maxLineLength, exitDrainMs, stderrTailLines, stderrLineLength } = engineDefaults;
  const stderr = { maxLines: stderrTailLines, maxLineLength: stderrLineLength };
  const w = await WorkerProcess.start({ python, script, logger: quiet, helloTimeoutMs: 120_000, maxLineLength, exitDrainMs, stderr });
  const single = () => true;
  const exchanges: Exchange[] = [];
  const load = loadFields({ python, script, model, ...engineTuning(serveDefaults()) });
  exchanges.push(await exchange(w, "load", load, single));
  const gen = { messages: MESSAGES, max_tokens: 4, temperature: 0 };
  let genId = "";
  const g = exchange(w, "generate", gen, (m) => {
    genId = String(m.id);
    return m.type === "done";
  });
  exchanges.push(await g);
  exchanges.push(await exchange(w, "count_tokens", { messages: MESSAGES }, single));
  exchanges.push(await exchange(w, "stats", {}, single));
  exchanges.push(await exchange(w, "cancel", { target: genId }, single));
  exchanges.push(await exchange(w, "shutdown", {}, single));
  // Shutdown was sent by hand, so WorkerProcess calls the exit unexpected; its message has the code.
  const exit = await w.closed;
  const code = /exit code (\d+)/.exec(exit.error.message)?.[1];
  return { hello: w.hello as WorkerMessage, exchanges, exitCode: code === undefined ? null : Number(code) };
}

/** The message types of an exchange, a run of the same type counted once (tokens come in any number). */
function shape(ex: Exchange): string[] {
  return ex.replies.map((m) => m.type).filter((t, i, all) => t !== all[i - 1]);
}

const keys = (m: WorkerMessage) => Object.keys(m).sort();
const isNum = (v: unknown) => typeof v === "number" && Number.isFinite(v);

/** The fields the server reads from each reply (src/bridge/*), checked for either worker. */
function checkFields(t: Transcript): void {
  expect(t.hello.type).toBe("hello");
  const [load, gen, count, stats, cancel, bye] = t.exchanges as Exchange[];
  const loaded = load?.replies[0] as WorkerMessage;
  expect(isNum(loaded.context_length)).toBe(true);
  expect(typeof loaded.model).toBe("string");
  for (const m of gen?.replies ?? []) {
    if (m.type === "started") expect([isNum(m.prompt_tokens), isNum(m.cached_tokens)]).toEqual([true, true]);
    if (m.type === "progress") expect([isNum(m.processed), isNum(m.total)]).toEqual([true, true]);
    if (m.type === "delta") expect(typeof m.text).toBe("string");
  }
  const done = gen?.replies.at(-1) as WorkerMessage;
  expect(["stop", "length"]).toContain(String(done.finish_reason));
  expect([isNum(done.prompt_tokens), isNum(done.completion_tokens), isNum(done.cached_tokens)]).toEqual([true, true, true]);
  expect(isNum(count?.replies[0]?.input_tokens)).toBe(true);
  expect(typeof stats?.replies[0]?.memory).toBe("object");
  expect(cancel?.replies[0]).toMatchObject({ type: "cancelled", found: false });
  expect(bye?.replies[0]?.type).toBe("bye");
  expect(t.exitCode).toBe(0);
}

describe("worker protocol: the fake worker against the real one", () => {
  let fake: Transcript;
  let real: Transcript;

  beforeAll(async () => {
    const model = await tinyModelDir();
    [fake, real] = await Promise.all([
      session(process.execPath, join(REPO, "test/support/fake-worker.ts"), model),
      session(testPython(), join(REPO, "python_bridge/mlx_inference.py"), model),
    ]);
  });

  test("each worker answers the session with the fields the server reads", () => {
    checkFields(real);
    checkFields(fake);
  });

  test("the same message types in the same order, command by command", () => {
    expect(real.exchanges.map(shape)).toEqual([
      ["loaded"],
      ["started", "progress", "delta", "done"],
      ["count"],
      ["stats"],
      ["cancelled"],
      ["bye"],
    ]);
    expect(fake.exchanges.map((e) => e.cmd)).toEqual(real.exchanges.map((e) => e.cmd));
    expect(fake.exchanges.map(shape)).toEqual(real.exchanges.map(shape));
  });

  test("every field the fake sends, the real worker sends too", () => {
    const missing = (f: WorkerMessage, r: WorkerMessage | undefined) => keys(f).filter((k) => !r || !(k in r));
    expect(missing(fake.hello, real.hello)).toEqual([]);
    fake.exchanges.forEach((ex, i) => {
      const theirs = real.exchanges[i]?.replies ?? [];
      for (const m of ex.replies) {
        const twin = theirs.find((r) => r.type === m.type);
        expect({ cmd: ex.cmd, type: m.type, missing: missing(m, twin) }).toEqual({ cmd: ex.cmd, type: m.type, missing: [] });
      }
    });
  });
});
