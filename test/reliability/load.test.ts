/**
 * Load: 32 concurrent streaming clients against a queue bound of 8. Every request ends in a
 * complete stream or a 529 with retry-after; none hangs, none is lost. Prints p50/p99 latency
 * (figures only: no timing assertions here).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { type RunningServer, deadline, errorShapeProblems, health, parseSseText, percentile, postMessages, startTinyServer, unexpectedServerErrors } from "./support";

setDefaultTimeout(180_000);

const CLIENTS = 32;
const ROUNDS = 3;
const QUEUE_LIMIT = 8;
let server: RunningServer;

beforeAll(async () => {
  server = await startTinyServer(["--queue-limit", String(QUEUE_LIMIT)]);
});

afterAll(async () => {
  await server?.stop();
});

interface Outcome {
  kind: "ok" | "overloaded";
  ms: number;
  /** ok: time to the first text delta. */
  ttftMs?: number;
  retryAfter?: number;
}

async function one(client: number, round: number): Promise<Outcome> {
  const t0 = performance.now();
  const res = await postMessages(server.url, {
    model: "claude-sonnet-4-5",
    max_tokens: 48,
    stream: true,
    messages: [{ role: "user", content: `client ${client}, round ${round}: say something` }],
  });
  if (res.status === 529) {
    const text = await res.text();
    expect(errorShapeProblems(res.status, res.headers, text)).toEqual([]);
    expect(JSON.parse(text).error.type).toBe("overloaded_error");
    const retryAfter = Number(res.headers.get("retry-after"));
    expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60).toBe(true);
    expect(res.headers.get("x-should-retry")).toBe("true");
    return { kind: "overloaded", ms: performance.now() - t0, retryAfter };
  }
  expect(res.status).toBe(200);
  // Read incrementally to time the first token.
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let text = "";
  let ttftMs: number | undefined;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += dec.decode(value, { stream: true });
    if (ttftMs === undefined && text.includes("content_block_delta")) ttftMs = performance.now() - t0;
  }
  const events = parseSseText(text).map((f) => f.event);
  expect(events[0]).toBe("message_start");
  expect(events.at(-1)).toBe("message_stop");
  expect(events).not.toContain("error");
  return { kind: "ok", ms: performance.now() - t0, ...(ttftMs !== undefined ? { ttftMs } : {}) };
}

const fmt = (xs: number[]) => (xs.length ? `p50 ${percentile(xs, 50).toFixed(0)} ms, p99 ${percentile(xs, 99).toFixed(0)} ms (n=${xs.length})` : "n=0");

describe("load", () => {
  test(`${CLIENTS} concurrent streaming clients x ${ROUNDS} requests against --queue-limit ${QUEUE_LIMIT}`, async () => {
    const t0 = performance.now();
    const clients = Array.from({ length: CLIENTS }, async (_, c) => {
      const mine: Outcome[] = [];
      for (let r = 0; r < ROUNDS; r++) mine.push(await deadline(one(c, r), 120_000, `client ${c} round ${r}`));
      return mine;
    });
    const outcomes = (await Promise.all(clients)).flat();
    const wall = performance.now() - t0;

    const ok = outcomes.filter((o) => o.kind === "ok");
    const over = outcomes.filter((o) => o.kind === "overloaded");
    console.log(
      `[load] ${outcomes.length} requests in ${(wall / 1000).toFixed(1)} s: ${ok.length} streamed, ${over.length} got 529\n` +
        `[load] streamed, request to last event: ${fmt(ok.map((o) => o.ms))}\n` +
        `[load] streamed, time to first token:  ${fmt(ok.flatMap((o) => (o.ttftMs === undefined ? [] : [o.ttftMs])))}\n` +
        `[load] 529 answers:                     ${fmt(over.map((o) => o.ms))}; retry-after ${[...new Set(over.map((o) => o.retryAfter))].join(",") || "-"} s`,
    );

    // None lost: every request ended in one of the two outcomes.
    expect(outcomes.length).toBe(CLIENTS * ROUNDS);
    expect(ok.length + over.length).toBe(CLIENTS * ROUNDS);
    // At least one generation runs and QUEUE_LIMIT wait: at least that many of the first wave are served.
    expect(ok.length).toBeGreaterThanOrEqual(QUEUE_LIMIT + 1);

    const h = await health(server.url);
    expect(h.engine.running).toBe(0);
    expect(h.engine.queued).toBe(0);
    expect(server.proc.exitCode).toBeNull();
    expect(unexpectedServerErrors(server.output())).toEqual([]);
  });
});
