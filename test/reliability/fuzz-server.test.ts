/**
 * Bad input over HTTP: a few hundred generated requests against the real server process
 * (real worker, tiny model), then oversize bodies. The server answers each one properly and
 * stays up. Same seed handling as fuzz.test.ts (PENSIEVE_FUZZ_SEED); PENSIEVE_FUZZ_HTTP_RUNS.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import fc from "fast-check";
import { COUNT, MESSAGES, fuzzCase } from "./fuzz-cases";
import { describeCase, fuzzSeed, judgeAnswer } from "./fuzz-run";
import { type RunningServer, TOKEN, deadline, errorShapeProblems, health, postMessages, shortBody, startTinyServer, unexpectedServerErrors } from "./support";

setDefaultTimeout(180_000);

const RUNS = Math.max(300, Number(process.env.PENSIEVE_FUZZ_HTTP_RUNS ?? 0) || 0);
const MB = 1024 * 1024;
let server: RunningServer;
let workerPid = 0;

beforeAll(async () => {
  server = await startTinyServer();
  workerPid = (await health(server.url)).engine.workerPid ?? 0;
});

afterAll(async () => {
  await server?.stop();
});

function post(path: string, body: BodyInit, headers: Record<string, string>): Promise<Response> {
  return fetch(server.url + path, { method: "POST", headers: { "x-api-key": TOKEN, ...headers }, body });
}

describe("fuzz against the real server over HTTP", () => {
  test(`${RUNS} generated requests: shaped 4xx or a proper 200, and the server stays up`, async () => {
    const seed = fuzzSeed();
    console.log(`[fuzz-http] seed=${seed} runs=${RUNS} (replay: PENSIEVE_FUZZ_SEED=${seed} bun test test/reliability/fuzz-server.test.ts)`);
    // Accepted requests really generate here: keep them short.
    const arb = fuzzCase({ maxTokensCap: 6, hugeMaxTokens: false });
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(arb, async (c) => {
        const headers: Record<string, string> = {};
        if (c.contentType !== null) headers["content-type"] = c.contentType;
        const answer = (async () => {
          const res = await post(c.path, c.body, headers);
          return { status: res.status, headers: res.headers, text: await res.text() };
        })();
        const { status, headers: h, text } = await deadline(answer, 30_000, describeCase(c));
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        const problems = judgeAnswer(c, status, h, text);
        if (problems.length) throw new Error(`${problems.join("; ")}\n  case: ${describeCase(c)}`);
      }),
      { seed, numRuns: RUNS },
    );
    console.log(`[fuzz-http] statuses: ${[...statuses].map(([s, n]) => `${s}x${n}`).join(" ")}`);
    expect(server.proc.exitCode).toBeNull();
  });

  test("bodies over 32 MB get an Anthropic 413 (content-length and chunked)", async () => {
    const big = new Uint8Array(33 * MB).fill(0x20);
    const chunked = () =>
      new ReadableStream<Uint8Array>({
        start(ctrl) {
          const chunk = new Uint8Array(MB).fill(0x20);
          for (let i = 0; i < 40; i++) ctrl.enqueue(chunk);
          ctrl.close();
        },
      });
    const cases: [string, string, () => BodyInit][] = [
      ["33 MB, content-length", MESSAGES, () => big],
      ["40 MB, chunked", MESSAGES, () => chunked()],
      ["count_tokens, 33 MB", COUNT, () => big],
    ];
    for (const [name, path, body] of cases) {
      const res = await deadline(post(path, body(), { "content-type": "application/json" }), 60_000, name);
      const text = await res.text();
      expect({ name, status: res.status }).toEqual({ name, status: 413 });
      expect({ name, problems: errorShapeProblems(res.status, res.headers, text) }).toEqual({ name, problems: [] });
    }
  });

  // Bun's own maxRequestBodySize (64 MB, src/cli/serve.ts) answers first, with a bare 413.
  test("a body over Bun's own limit (70 MB) also gets an Anthropic-shaped 413", async () => {
    const res = await deadline(post(MESSAGES, new Uint8Array(70 * MB).fill(0x20), { "content-type": "application/json" }), 60_000, "70 MB body");
    const text = await res.text();
    expect(res.status).toBe(413);
    expect(errorShapeProblems(res.status, res.headers, text)).toEqual([]);
  });

  test("afterwards: same process, same worker, healthy, serving, and no 5xx was logged", async () => {
    expect(server.proc.exitCode).toBeNull();
    const h = await health(server.url);
    expect(h.ready).toBe(true);
    expect(h.engine.workerPid).toBe(workerPid);
    expect(h.engine.running).toBe(0);
    expect(h.engine.queued).toBe(0);
    const res = await postMessages(server.url, shortBody());
    expect(res.status).toBe(200);
    expect((await res.json()).type).toBe("message");
    expect(unexpectedServerErrors(server.output())).toEqual([]);
  });
});
