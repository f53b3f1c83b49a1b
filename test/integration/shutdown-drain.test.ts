/**
 * SIGTERM/SIGINT with the real worker and the tiny model: running generations may finish
 * within --shutdown-drain-ms, what is left ends with a retryable error, new requests get 503,
 * and the process exits 0. Never a short answer marked complete. Deadlines only bound waiting.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { checkAnthropicStream, readSse, type WireEvent } from "../support/sse";
import { DEFAULT_TOKEN, pidAlive, type RunningServer, startServer, testPython, tinyModelDir } from "../support/server-process";

setDefaultTimeout(180_000);

// Greedy decoding of the tiny model never ends by itself: a finished answer has all 4,000 tokens.
const MAX_TOKENS = 4000;
const body = (stream: boolean, tag: string) => ({
  model: "claude-opus-5-5",
  max_tokens: MAX_TOKENS,
  temperature: 0,
  stream,
  messages: [{ role: "user", content: `drain ${tag} ${Math.random().toString(36).slice(2)}` }],
});
const post = (server: RunningServer, json: unknown) =>
  fetch(`${server.url}/v1/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": DEFAULT_TOKEN },
    body: JSON.stringify(json),
  });

// With the token, /health shows its details (in-flight count, the drain's phase).
async function health(server: RunningServer): Promise<Record<string, any>> {
  return (await (await fetch(`${server.url}/health`, { headers: { "x-api-key": DEFAULT_TOKEN } })).json()) as Record<string, any>;
}

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await Bun.sleep(20);
  }
}

type Outcome = { kind: "complete"; stopReason: string; outputTokens: number } | { kind: "error"; status: number; type: string };

/** A 4,000-token stream: resolves once a few deltas arrived, with its outcome to come. */
async function openStream(server: RunningServer): Promise<{ outcome: Promise<Outcome>; events: WireEvent[] }> {
  const res = await post(server, body(true, "stream"));
  expect(res.status).toBe(200);
  const events: WireEvent[] = [];
  let deltas = 0;
  let onDeltas: () => void = () => {};
  const flowing = new Promise<void>((resolve) => (onDeltas = resolve));
  const outcome = (async (): Promise<Outcome> => {
    for await (const ev of readSse(res.body!)) {
      events.push(ev);
      if (ev.event === "content_block_delta" && ++deltas === 3) onDeltas();
    }
    onDeltas();
    const s = checkAnthropicStream(events, { allowError: true });
    if (s.error) return { kind: "error", status: 200, type: s.error.type };
    return { kind: "complete", stopReason: s.stopReason, outputTokens: s.usage.output_tokens };
  })();
  await flowing;
  return { outcome, events };
}

/** A 4,000-token JSON request; resolves with its outcome. */
async function jsonRequest(server: RunningServer): Promise<Outcome & { retryAfter: string | null }> {
  const res = await post(server, body(false, "json"));
  const json = (await res.json()) as Record<string, any>;
  const retryAfter = res.headers.get("retry-after");
  if (res.status === 200) return { kind: "complete", stopReason: json.stop_reason, outputTokens: json.usage.output_tokens, retryAfter };
  return { kind: "error", status: res.status, type: json.error?.type, retryAfter };
}

/** Never a short answer marked complete: all the tokens, or a retryable error. */
function expectHonest(o: Outcome): void {
  if (o.kind === "complete") {
    expect(o.stopReason).toBe("max_tokens");
    expect(o.outputTokens).toBe(MAX_TOKENS);
  } else {
    expect(o.type).toBe("overloaded_error");
    expect([200, 503]).toContain(o.status);
  }
}

/** Starts a server, opens a stream and a JSON request, and waits until both are generating. */
async function busyServer(drainMs: number) {
  const server = await startServer({ args: ["--python", testPython(), "--model", await tinyModelDir(), "--shutdown-drain-ms", String(drainMs)] });
  const workerPid = (await health(server)).engine.workerPid as number;
  const stream = await openStream(server);
  const json = jsonRequest(server);
  // The guard's in-flight count is cheap; the worker's stats may time out while it generates.
  await until("both requests in flight", async () => (await health(server)).memory?.in_flight === 2);
  await Bun.sleep(200);
  return { server, workerPid, stream, json };
}

async function exitCode(server: RunningServer): Promise<number> {
  const code = await server.proc.exited;
  await server.stop();
  return code;
}

describe("SIGTERM drains running generations", () => {
  test("a short window (300 ms): the stream and the JSON request end with retryable errors; exit 0", async () => {
    const { server, workerPid, stream, json } = await busyServer(300);
    server.proc.kill("SIGTERM");
    const s = await stream.outcome;
    const j = await json;
    expect(s).toEqual({ kind: "error", status: 200, type: "overloaded_error" });
    expect(stream.events.map((e) => e.event)).not.toContain("message_stop");
    expect(j).toMatchObject({ kind: "error", status: 503, type: "overloaded_error" });
    expect(Number(j.retryAfter)).toBeGreaterThan(0);
    expect(await exitCode(server)).toBe(0);
    await until("the worker to exit", () => !pidAlive(workerPid), 15_000);
  });

  test("a long window: both complete in full; meanwhile new requests get 503 and /health says draining; exit 0", async () => {
    const { server, stream, json } = await busyServer(120_000);
    server.proc.kill("SIGTERM");
    await until("the drain to begin", async () => (await health(server)).memory?.shutdown?.phase === "draining", 10_000);
    const h = await health(server);
    expect(h.memory.accepting).toBe(false);
    expect(h.memory.shutdown.drain_left_ms).toBeGreaterThan(0);
    // The top-level status says so without the token too.
    const pub = (await (await fetch(`${server.url}/health`)).json()) as Record<string, any>;
    expect(pub).toMatchObject({ status: "draining", ready: false });
    const refused = await post(server, body(false, "late"));
    expect(refused.status).toBe(503);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(refused.headers.get("x-should-retry")).toBe("true");
    expect(((await refused.json()) as any).error.type).toBe("overloaded_error");
    const s = await stream.outcome;
    const j = await json;
    expect(s).toEqual({ kind: "complete", stopReason: "max_tokens", outputTokens: MAX_TOKENS });
    expect(j).toMatchObject({ kind: "complete", stopReason: "max_tokens", outputTokens: MAX_TOKENS });
    expect(await exitCode(server)).toBe(0);
  });

  test("a second signal ends a long drain early, still with errors, never end_turn; exit 0", async () => {
    const { server, stream, json } = await busyServer(120_000);
    server.proc.kill("SIGTERM");
    await until("the drain to begin", async () => (await health(server)).memory?.shutdown?.phase === "draining", 10_000);
    server.proc.kill("SIGINT");
    const s = await stream.outcome;
    const j = await json;
    expectHonest(s);
    expectHonest(j);
    // 4,000 tokens take seconds; the second signal comes within a few hundred ms of the first.
    expect([s.kind, j.kind]).toContain("error");
    expect(await exitCode(server)).toBe(0);
  });
});
