/** Shared setup for the bridge tests: an MlxEngine driving test/support/fake-worker.ts. */

import { afterEach } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { MlxEngine, type MlxEngineOptions, engineTuning } from "../../../src/bridge/mlx-engine";
import { serveDefaults } from "../../../src/config";
import type { Logger } from "../../../src/log";
import type { EngineEvent, GenerateRequest } from "../../../src/engine/types";

export const FAKE_WORKER = resolve(import.meta.dir, "../../support/fake-worker.ts");
/** What the fake worker writes to stderr before a "crash" or "crashcount" (server log only). */
export const FAKE_SECRET = "SECRET-PROMPT-FRAGMENT-7f3a";

export interface LogEntry {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

/** One command as the fake worker received it (selected fields). */
export interface JournalEntry {
  cmd: string;
  id: string;
  target?: string;
  level?: string;
  tool_choice?: unknown;
  parallel_tool_calls?: boolean;
  /** Number of tools sent. */
  tools?: number;
  /** "counter" for commands the token counter received. */
  role?: string;
}

export interface FakeSetup {
  engine: MlxEngine;
  logs: LogEntry[];
  /** Commands the fake worker(s) received, in order. */
  journal(): JournalEntry[];
  cleanup(): Promise<void>;
}

/** The engine settings `pensieve serve` uses by default: tests take them from src/config.ts. */
export const CONFIG_TUNING = engineTuning(serveDefaults());

export function fakeEngine(opts: Partial<MlxEngineOptions> = {}, fakeEnv: Record<string, string> = {}): FakeSetup {
  const dir = mkdtempSync(join(tmpdir(), "pensieve-bridge-"));
  const journalPath = join(dir, "journal.jsonl");
  const logs: LogEntry[] = [];
  const logger: Logger = {
    debug: (msg, fields) => logs.push({ level: "debug", msg, fields }),
    info: (msg, fields) => logs.push({ level: "info", msg, fields }),
    warn: (msg, fields) => logs.push({ level: "warn", msg, fields }),
    error: (msg, fields) => logs.push({ level: "error", msg, fields }),
  };
  const engine = new MlxEngine({
    ...CONFIG_TUNING,
    python: process.execPath, // the bun binary runs the fake worker
    script: FAKE_WORKER,
    model: "fake-model",
    logger,
    ...opts,
    env: { FAKE_WORKER_JOURNAL: journalPath, ...fakeEnv, ...opts.env },
  });
  return {
    engine,
    logs,
    journal() {
      let text = "";
      try {
        text = readFileSync(journalPath, "utf8");
      } catch {
        return [];
      }
      return text
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l));
    },
    async cleanup() {
      await engine.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let seq = 0;
export function req(content: string, extra: Partial<GenerateRequest> = {}): GenerateRequest {
  return { requestId: `req_${++seq}`, messages: [{ role: "user", content }], maxTokens: 16, ...extra };
}

/** Drains a generation; returns its events and the error it threw, if any. */
export async function collect(gen: AsyncIterable<EngineEvent>): Promise<{ events: EngineEvent[]; error?: unknown }> {
  const events: EngineEvent[] = [];
  try {
    for await (const ev of gen) events.push(ev);
  } catch (error) {
    return { events, error };
  }
  return { events };
}

export function types(events: EngineEvent[]): string[] {
  return events.map((e) => e.type);
}

/** Polls until `check` is true; for conditions driven by other processes. */
export async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A `setup(...)` for a test file: each engine it makes is cleaned up after every test. */
export function fakeEngines(): (...args: Parameters<typeof fakeEngine>) => FakeSetup {
  let setups: FakeSetup[] = [];
  afterEach(async () => {
    await Promise.all(setups.map((s) => s.cleanup()));
    setups = [];
  });
  return (...args) => {
    const s = fakeEngine(...args);
    setups.push(s);
    return s;
  };
}
