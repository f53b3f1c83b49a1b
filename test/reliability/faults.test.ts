/**
 * Faults against the real server, real worker and tiny model: the worker SIGKILLed mid-stream,
 * 100 clients leaving mid-stream, a client that does not read, and a hung (SIGSTOPped) worker.
 * One server for all, with a queue big enough for the disconnect storm and a short
 * --request-timeout-ms so a hang is detected quickly.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import net from "node:net";
import {
  type RunningServer,
  type SseFrame,
  TOKEN,
  deadline,
  health,
  longStreamBody,
  parseSseText,
  pidAlive,
  postMessages,
  shortBody,
  sseFrames,
  startTinyServer,
  tcpTable,
  waitFor,
} from "./support";

setDefaultTimeout(180_000);

const REQUEST_TIMEOUT_MS = 3000;
let server: RunningServer;

beforeAll(async () => {
  server = await startTinyServer(["--queue-limit", "128", "--request-timeout-ms", String(REQUEST_TIMEOUT_MS)]);
});

afterAll(async () => {
  await server?.stop();
});

/** Opens a long stream and returns its frame iterator once the first text delta arrived. */
async function streamUntilFirstDelta(content: string): Promise<{ frames: AsyncGenerator<SseFrame>; seen: SseFrame[] }> {
  const res = await postMessages(server.url, longStreamBody(content));
  expect(res.status).toBe(200);
  const frames = sseFrames(res.body!);
  const seen: SseFrame[] = [];
  for (;;) {
    const r = await deadline(frames.next(), 60_000, "first text delta");
    if (r.done) throw new Error(`stream ended before any text: ${JSON.stringify(seen.map((f) => f.event))}`);
    seen.push(r.value);
    if (r.value.event === "content_block_delta") return { frames, seen };
  }
}

async function drain(frames: AsyncGenerator<SseFrame>, seen: SseFrame[], ms: number, what: string): Promise<SseFrame[]> {
  await deadline(
    (async () => {
      for await (const f of frames) seen.push(f);
    })(),
    ms,
    what,
  );
  return seen;
}

/** A fresh worker (not `old`) is up and a request is served by it. */
async function expectServedByNewWorker(old: number): Promise<void> {
  const h = await waitFor(async () => {
    const b = await health(server.url);
    return b.ready && b.engine.workerPid && b.engine.workerPid !== old ? b : null;
  }, "a restarted worker", 60_000);
  expect(h.engine.restarts ?? 0).toBeGreaterThan(0);
  const res = await postMessages(server.url, shortBody());
  const body = await res.json();
  expect(res.status).toBe(200);
  expect(body.type).toBe("message");
  expect(body.usage.output_tokens).toBeGreaterThan(0);
  const stream = parseSseText(await (await postMessages(server.url, shortBody({ stream: true }))).text());
  expect(stream[0]?.event).toBe("message_start");
  expect(stream.at(-1)?.event).toBe("message_stop");
  expect((await health(server.url)).engine.workerPid).toBe(h.engine.workerPid!);
}

function expectErrorEventLast(frames: SseFrame[]): SseFrame {
  const events = frames.map((f) => f.event);
  expect(events).not.toContain("message_stop");
  const last = frames.at(-1)!;
  expect(last.event).toBe("error");
  expect(last.data.type).toBe("error");
  expect(typeof last.data.error.type).toBe("string");
  expect(last.data.error.message.length).toBeGreaterThan(0);
  return last;
}

describe("faults: real server, real worker", () => {
  test("worker SIGKILLed mid-stream: the client gets event: error; the next request gets a restarted worker", async () => {
    const { frames, seen } = await streamUntilFirstDelta("Count slowly to a million.");
    const victim = (await health(server.url)).engine.workerPid!;
    expect(victim).toBeGreaterThan(0);
    process.kill(victim, "SIGKILL");
    const all = await drain(frames, seen, 30_000, "the stream to end after the worker died");
    const err = expectErrorEventLast(all);
    console.log(`[faults] kill: stream ended with event: error (${err.data.error.type}) after ${all.length} frames`);
    await expectServedByNewWorker(victim);
    expect(pidAlive(victim)).toBe(false);
  });

  test("hung worker (SIGSTOP): the request times out with an error and the worker is replaced", async () => {
    const { frames, seen } = await streamUntilFirstDelta("Recite the alphabet forever.");
    const victim = (await health(server.url)).engine.workerPid!;
    // PENSIEVE_WORKER_FAULT has no hang mode; a stopped process is a real hang to the server.
    process.kill(victim, "SIGSTOP");
    try {
      const all = await drain(frames, seen, REQUEST_TIMEOUT_MS + 30_000, "the stream to end after the worker hung");
      const err = expectErrorEventLast(all);
      expect(err.data.error.type).toBe("timeout_error");
      await expectServedByNewWorker(victim);
      await waitFor(() => !pidAlive(victim), "the hung worker to be killed", 15_000);
      expect(server.output()).toContain("worker hung during a generation");
    } finally {
      if (pidAlive(victim)) process.kill(victim, "SIGKILL");
    }
  });

  test("100 clients disconnect mid-stream (and 20 before any byte): nothing is left running, the queue drains", async () => {
    const abortedBefore = (server.output().match(/"outcome":"aborted"/g) ?? []).length;
    const midStream = async (i: number): Promise<number> => {
      const ac = new AbortController();
      const res = await postMessages(server.url, longStreamBody(`Client ${i}: write an endless poem.`), { signal: ac.signal });
      expect(res.status).toBe(200);
      // Leave after 1, 3 or 6 frames: message_start, then pings (still queued) or content (running).
      const leaveAfter = [1, 3, 6][i % 3]!;
      let n = 0;
      for await (const _ of sseFrames(res.body!)) if (++n >= leaveAfter) break;
      ac.abort();
      return n;
    };
    // Gone before the answer starts: while queued, or while the server waits for the first token.
    const early = async (i: number): Promise<number> => {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), (i % 4) * 15);
      try {
        const res = await postMessages(server.url, longStreamBody(`Early ${i}`), { signal: ac.signal });
        await res.body?.cancel();
      } catch (err) {
        if ((err as Error).name !== "AbortError") throw err;
      }
      return 1;
    };
    const BATCH = 24;
    for (let b = 0; b < 5; b++) {
      const batch = Array.from({ length: BATCH }, (_, i) => (i < 20 ? midStream(b * 20 + i) : early(b * 4 + i)));
      const got = await deadline(Promise.all(batch), 90_000, `disconnect batch ${b}`);
      expect(got.every((n) => n >= 1)).toBe(true);
    }
    // Every one of the 100 mid-stream generators ended as "aborted" on the server side...
    await waitFor(() => (server.output().match(/"outcome":"aborted"/g) ?? []).length - abortedBefore >= 100, "100 aborted streams in the log", 60_000);
    // ...and nothing runs or waits any more.
    const idle = await waitFor(async () => {
      const h = await health(server.url);
      return h.engine.running === 0 && h.engine.queued === 0 ? h : null;
    }, "running 0 and queued 0", 60_000);
    expect(idle.ready).toBe(true);
    expect(idle.memory?.in_flight).toBe(0);
    const res = await postMessages(server.url, shortBody());
    expect(res.status).toBe(200);
    expect((await res.json()).type).toBe("message");
  });

  test("a client that does not read stalls neither the others nor the worker; its stream completes later", async () => {
    // An 8 MB model name is echoed in message_start: far more than the socket buffers hold,
    // so the server's writes to this client block until it reads.
    const model = `slow-${"m".repeat(8 * 1024 * 1024)}`;
    const body = JSON.stringify(longStreamBody("Describe the sea at length.", 2000, { model }));
    const sock = net.connect(server.port, "127.0.0.1");
    await new Promise<void>((resolve, reject) => sock.once("connect", resolve).once("error", reject));
    sock.pause();
    const chunks: Buffer[] = [];
    try {
      sock.write(
        `POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nx-api-key: ${TOKEN}\r\n` +
          `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`,
      );
      sock.write(body);
      // Linux: wait until the server's send queue to this client backs up (message_start sent,
      // so its generation runs, and the client really is not reading). Elsewhere: until it runs.
      const backedUp = () => tcpTable()?.find((e) => e.localPort === server.port && e.remotePort === sock.localPort && e.txQueue > 0);
      const linux = tcpTable() !== null;
      if (linux) console.log(`[faults] slow client: ${(await waitFor(backedUp, "the server's send queue to back up", 30_000)).txQueue} bytes stuck in the server's send queue`);
      else await waitFor(async () => ((await health(server.url)).engine.running ?? 0) >= 1, "the slow client's generation to start", 30_000);
      // Others (queued behind it, or batched alongside) finish while it still reads nothing.
      const others = await deadline(
        Promise.all([
          postMessages(server.url, shortBody()).then(async (r) => ({ status: r.status, type: (await r.json()).type })),
          postMessages(server.url, shortBody()).then(async (r) => ({ status: r.status, type: (await r.json()).type })),
          postMessages(server.url, shortBody({ stream: true })).then(async (r) => ({
            status: r.status,
            type: parseSseText(await r.text()).at(-1)?.event,
          })),
        ]),
        90_000,
        "the other clients, while one client reads nothing",
      );
      expect(others).toEqual([
        { status: 200, type: "message" },
        { status: 200, type: "message" },
        { status: 200, type: "message_stop" },
      ]);
      // Its own generation also ends on the server side, though it has still read nothing.
      await waitFor(async () => {
        const h = await health(server.url);
        return h.engine.running === 0 && h.engine.queued === 0;
      }, "the slow client's generation to finish in the worker", 60_000);
      if (linux) expect(backedUp()).toBeDefined();

      // Now read it all: a complete, valid stream.
      sock.on("data", (c: Buffer) => chunks.push(c));
      const ended = new Promise<void>((resolve) => sock.once("end", resolve).once("close", () => resolve()));
      sock.resume();
      await deadline(ended, 60_000, "the slow client's stream to end");
    } finally {
      sock.destroy();
    }
    const raw = Buffer.concat(chunks);
    const headerEnd = raw.indexOf("\r\n\r\n");
    const head = raw.subarray(0, headerEnd).toString("latin1");
    expect(head.split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
    const payload = /transfer-encoding:\s*chunked/i.test(head) ? dechunk(raw.subarray(headerEnd + 4)) : raw.subarray(headerEnd + 4);
    const frames = parseSseText(payload.toString("utf8"));
    expect(frames[0]?.event).toBe("message_start");
    expect(frames[0]?.data.message.model).toBe(model);
    expect(frames.at(-1)?.event).toBe("message_stop");
    expect(frames.map((f) => f.event)).not.toContain("error");
    const delta = frames.find((f) => f.event === "message_delta");
    expect(["max_tokens", "end_turn"]).toContain(delta?.data.delta.stop_reason);
  });
});

/** Decodes an HTTP/1.1 chunked body. */
function dechunk(buf: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  while (at < buf.length) {
    const eol = buf.indexOf("\r\n", at);
    if (eol < 0) break;
    const size = Number.parseInt(buf.subarray(at, eol).toString("latin1").split(";")[0]!, 16);
    if (!size) break;
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(parts);
}
