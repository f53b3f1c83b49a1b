/**
 * The real server from source with the real worker and the tiny model: a client that leaves
 * cancels its generation, sequential requests all succeed on one worker, and SIGTERM stops
 * the server and its worker. No timing assertions; deadlines only bound waiting.
 */
import Anthropic from "@anthropic-ai/sdk";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { checkAnthropicStream, readSse, type WireEvent } from "../support/sse";
import { DEFAULT_TOKEN, pidAlive, type RunningServer, startServer, testPython, tinyModelDir } from "../support/server-process";

setDefaultTimeout(180_000);

let server: RunningServer;
let client: Anthropic;
let workerPid = 0;
const MODEL = "claude-opus-5-5";
const nonce = () => Math.random().toString(36).slice(2, 10);
// Greedy decoding of the tiny model repeats one token and never ends by itself, so a
// generation this long is still running whenever the client leaves (it would take minutes).
const ENDLESS = { model: MODEL, max_tokens: 60_000, temperature: 0 };

beforeAll(async () => {
  server = await startServer({ args: ["--python", testPython(), "--model", await tinyModelDir()] });
  client = new Anthropic({ baseURL: server.url, apiKey: DEFAULT_TOKEN, maxRetries: 0 });
  workerPid = (await health()).engine.workerPid;
}, 180_000);

afterAll(async () => {
  await server?.stop();
});

async function health(): Promise<Record<string, any>> {
  const res = await fetch(`${server.url}/health`, { headers: { "x-api-key": DEFAULT_TOKEN } });
  return (await res.json()) as Record<string, any>;
}

/** Polls until `check` holds; fails with `what` and the last value after `ms`. */
async function eventually<T>(what: string, get: () => Promise<T> | T, check: (v: T) => boolean, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last = await get();
  while (!check(last)) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms; last: ${JSON.stringify(last)}`);
    await Bun.sleep(50);
    last = await get();
  }
  return last;
}

const idle = (h: Record<string, any>) => h.engine?.running === 0 && h.engine?.queued === 0;

// The worker's own diagnostic line for a generation it stopped on `cancel` (stderr, forwarded).
const cancelledInWorker = () => server.output().match(/\[worker\] generate id=\S+ finish=cancelled/g)?.length ?? 0;

/**
 * The worker cancelled one more generation, the engine is idle again on the same worker,
 * the server logged a stream as aborted, and the next request is served.
 */
async function expectCancelled(before: number, requestId: string | null, kind: "messages stream" | "messages") {
  await eventually("the worker to cancel the generation", cancelledInWorker, (n) => n === before + 1);
  const h = await eventually("engine idle after the client left", health, idle);
  expect(h.engine.workerPid).toBe(workerPid);
  expect(h.engine.restarts).toBe(0);
  if (kind === "messages stream" && requestId) {
    const line = await eventually(
      "the aborted stream's log line",
      () => server.output().split("\n").find((l) => l.includes(requestId) && l.includes("messages stream")),
      (l) => l !== undefined,
    );
    expect(line).toContain('"outcome":"aborted"');
  }
  // The next request is served by the same worker.
  const m = await client.messages.create({ model: MODEL, max_tokens: 4, messages: [{ role: "user", content: `next ${nonce()}` }] }, { timeout: 60_000 });
  expect(m.type).toBe("message");
  expect(m.usage.output_tokens).toBeGreaterThan(0);
}

describe("a client that leaves cancels its generation", () => {
  test("fetch aborted after a few text deltas", async () => {
    const before = cancelledInWorker();
    const ac = new AbortController();
    const res = await fetch(`${server.url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": DEFAULT_TOKEN },
      body: JSON.stringify({ ...ENDLESS, stream: true, messages: [{ role: "user", content: `cancel me ${nonce()}` }] }),
      signal: ac.signal,
    });
    expect(res.status).toBe(200);
    const requestId = res.headers.get("request-id");
    expect(requestId).toMatch(/^req_/);
    const events: WireEvent[] = [];
    let deltas = 0;
    try {
      for await (const ev of readSse(res.body!)) {
        events.push(ev);
        if (ev.event === "content_block_delta" && ++deltas === 3) ac.abort();
      }
    } catch (err) {
      expect((err as Error).name).toBe("AbortError");
    }
    expect(ac.signal.aborted).toBe(true);
    const s = checkAnthropicStream(events, { complete: false });
    expect(s.names).not.toContain("message_stop");
    await expectCancelled(before, requestId, "messages stream");
  });

  test("the SDK's stream.abort() after a few deltas", async () => {
    const before = cancelledInWorker();
    const stream = client.messages.stream({ ...ENDLESS, messages: [{ role: "user", content: `cancel me too ${nonce()}` }] });
    let deltas = 0;
    let requestId: string | null = null;
    const err = await (async () => {
      for await (const ev of stream) {
        if (ev.type === "message_start") requestId = stream.request_id ?? null;
        if (ev.type === "content_block_delta" && ++deltas === 3) stream.abort();
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.APIUserAbortError);
    expect(requestId).toMatch(/^req_/);
    await expectCancelled(before, requestId, "messages stream");
  });

  test("a non-streaming request whose client leaves", async () => {
    const before = cancelledInWorker();
    const ac = new AbortController();
    const pending = fetch(`${server.url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": DEFAULT_TOKEN },
      body: JSON.stringify({ ...ENDLESS, messages: [{ role: "user", content: `leave ${nonce()}` }] }),
      signal: ac.signal,
    });
    await eventually("the generation to start", health, (h) => h.engine?.running === 1);
    ac.abort();
    expect(await pending.catch((e: Error) => e.name)).toBe("AbortError");
    await expectCancelled(before, null, "messages");
  });
});

describe("sequential requests", () => {
  test("8 in a row (create, SDK stream, raw stream) all complete on one worker", async () => {
    const ids = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const params = { model: MODEL, max_tokens: 8, messages: [{ role: "user" as const, content: `request ${i} ${nonce()}` }] };
      let id: string;
      if (i % 3 === 0) {
        const m = await client.messages.create(params);
        expect(["end_turn", "max_tokens"]).toContain(m.stop_reason!);
        id = m.id;
      } else if (i % 3 === 1) {
        const final = await client.messages.stream(params).finalMessage();
        expect(["end_turn", "max_tokens"]).toContain(final.stop_reason!);
        id = final.id;
      } else {
        const res = await fetch(`${server.url}/v1/messages`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${DEFAULT_TOKEN}` },
          body: JSON.stringify({ ...params, stream: true }),
        });
        const events: WireEvent[] = [];
        for await (const ev of readSse(res.body!)) events.push(ev);
        const s = checkAnthropicStream(events);
        expect(["end_turn", "max_tokens"]).toContain(s.stopReason);
        id = s.message.id;
      }
      ids.add(id);
    }
    expect(ids.size).toBe(8);
    const h = await health();
    expect(idle(h)).toBe(true);
    expect(h.engine.workerPid).toBe(workerPid);
    expect(h.engine.restarts).toBe(0);
  });
});

describe("shutdown", () => {
  test("SIGTERM stops the server (exit 0) and its worker", async () => {
    expect(pidAlive(workerPid)).toBe(true);
    expect(await server.stop("SIGTERM")).toBe(0);
    await eventually("the worker to exit", () => pidAlive(workerPid), (alive) => !alive, 15_000);
  });
});
