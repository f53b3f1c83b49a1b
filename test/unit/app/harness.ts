/** Shared setup for the in-process app tests: createApp with fakes, request helpers, an SSE parser. */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { type AppConfig, type AppDeps, appTuning, createApp } from "../../../src/app";
import { serveDefaults } from "../../../src/config";
import type { SseEvent } from "../../../src/anthropic/stream";
import { GuardState } from "../../../src/lifecycle/guard-state";
import { FakeEngine, type FakeEngineOptions } from "../../support/fake-engine";
import { FakeMemoryMonitor } from "../../support/fake-memory";

export const TOKEN = "test-token";
export const BASE = "http://localhost";

export interface Harness {
  app: ReturnType<typeof createApp>;
  engine: FakeEngine;
  memory: FakeMemoryMonitor;
  /** The guard state createApp was given (in-flight registry, accepting, drain). */
  state: GuardState;
}

export function makeApp(
  opts: { engine?: FakeEngineOptions; config?: Partial<AppConfig>; deps?: Partial<AppDeps> } = {},
): Harness {
  const engine = new FakeEngine(opts.engine);
  const memory = new FakeMemoryMonitor();
  const config: AppConfig = {
    ...appTuning(serveDefaults()),
    token: TOKEN,
    aliases: "*=default",
    allowedHosts: [],
    version: "0.0.0-test",
    // Commit to the stream at once in tests, so "after start" paths need no timing.
    stream: { headStartMs: Number.POSITIVE_INFINITY, pingIntervalMs: Number.POSITIVE_INFINITY },
    ...opts.config,
  };
  const state = opts.deps?.state ?? new GuardState();
  const app = createApp({ engine, memory, config, state, ...opts.deps });
  return { app, engine, memory, state };
}

export function request(path: string, init: RequestInit & { json?: unknown; auth?: boolean } = {}): Request {
  const headers = new Headers(init.headers);
  if (init.auth !== false && !headers.has("x-api-key") && !headers.has("authorization")) headers.set("x-api-key", TOKEN);
  let body = init.body;
  if (init.json !== undefined) {
    body = JSON.stringify(init.json);
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
  }
  return new Request(BASE + path, { ...init, headers, body: body ?? null });
}

export function postMessages(h: Harness, json: unknown, init: RequestInit & { auth?: boolean } = {}): Promise<Response> {
  return h.app.handle(request("/v1/messages", { method: "POST", json, ...init }));
}

export const simpleBody = (extra: Record<string, unknown> = {}) => ({
  model: "claude-sonnet-4-5",
  max_tokens: 64,
  messages: [{ role: "user", content: "hi" }],
  ...extra,
});

/** Parses a text/event-stream body into events; checks each frame's event line matches data.type. */
export function parseSse(text: string): SseEvent[] {
  const events: SseEvent[] = [];
  for (const frame of text.split("\n\n")) {
    if (!frame.trim()) continue;
    let event = "";
    let data = "";
    for (const line of frame.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    events.push({ event, data: JSON.parse(data) });
  }
  return events;
}

export async function readSse(res: Response): Promise<SseEvent[]> {
  return parseSse(await res.text());
}

export interface Fixture {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: Record<string, any>;
}

export function loadFixture(): Fixture {
  const path = resolve(import.meta.dir, "../../fixtures/claude-code-first-turn.json");
  return JSON.parse(readFileSync(path, "utf8")) as Fixture;
}

// In process, Elysia's stream hands out the strings it enqueued; over a socket they are bytes.
const chunkDecoder = new TextDecoder();
export function chunkText(value: unknown): string {
  if (value === undefined) return "";
  return typeof value === "string" ? value : chunkDecoder.decode(value as Uint8Array, { stream: true });
}
