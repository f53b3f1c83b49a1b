/**
 * Raw request lines against the real server, from source and as the compiled binary: no request
 * target or Host form reaches a protected route without the token, and unauthenticated /health
 * shows nothing local. The engine is an OpenAI-compatible stand-in that records what it gets.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_TOKEN, REPO, type RunningServer, startServer } from "../support/server-process";

setDefaultTimeout(120_000);

const BIN = join(REPO, "dist", "pensieve");
const SSE = readFileSync(join(REPO, "test/fixtures/openai/openai-text-usage-null.sse"), "utf8");
const MESSAGE = JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 16, messages: [{ role: "user", content: "hi" }] });

interface RawAnswer {
  status: number;
  body: string;
}

/** Sends one request exactly as written (CRLF line ends added) and reads the answer to the close. */
function rawRequest(port: number, line: string, headers: string[], body = MESSAGE): Promise<RawAnswer> {
  const head = [line, ...headers, "Content-Type: application/json", `Content-Length: ${Buffer.byteLength(body)}`, "Connection: close"];
  return new Promise((resolve, reject) => {
    let data = "";
    // No half-close: the server would take it for a client that left and cancel the request.
    const socket = connect(port, "127.0.0.1", () => socket.write(`${head.join("\r\n")}\r\n\r\n${body}`));
    const timer = setTimeout(() => socket.destroy(new Error(`no answer to ${line}`)), 15_000);
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => (data += chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      clearTimeout(timer);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(data)?.[1] ?? 0);
      resolve({ status, body: data.slice(data.indexOf("\r\n\r\n") + 4) });
    });
  });
}

/** An OpenAI-compatible upstream that records every request; POSTs mean inference reached it. */
function startUpstream() {
  const posts: string[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const path = new URL(req.url).pathname;
      if (req.method === "POST") posts.push(path);
      if (path === "/v1/models") return Response.json({ object: "list", data: [{ id: "up-model", object: "model", max_model_len: 4096 }] });
      if (path === "/v1/chat/completions") return new Response(SSE, { headers: { "content-type": "text/event-stream" } });
      return new Response("not found", { status: 404 });
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, posts, stop: () => server.stop(true) };
}

function binaryIsFresh(): boolean {
  if (!existsSync(BIN)) return false;
  const built = statSync(BIN).mtimeMs;
  for (const dir of ["src", "python_bridge"])
    for (const f of new Bun.Glob("**/*").scanSync({ cwd: join(REPO, dir), onlyFiles: true }))
      if (statSync(join(REPO, dir, f)).mtimeMs > built) return false;
  return true;
}

async function buildBinary(): Promise<void> {
  if (binaryIsFresh()) return;
  const proc = Bun.spawn([process.execPath, "run", "build"], { cwd: REPO, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [code, err] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
  if (code !== 0) throw new Error(`bun run build failed (${code}):\n${err}`);
}

// Request lines and Host forms that once split the guards' view of a request from the router's.
const NO_TOKEN_ATTACKS: Array<[string, string[]]> = [
  ["POST /x[::1]/swagger/v1/messages HTTP/1.0", []],
  ["POST /v1/messages HTTP/1.0", []],
  ["POST /v1/messages/count_tokens HTTP/1.0", []],
  ["POST /health/../v1/messages HTTP/1.0", []],
  ["POST /v1/messages?x=/swagger HTTP/1.0", []],
  ["POST //v1/messages HTTP/1.0", []],
  ["POST http://evil.example/v1/messages HTTP/1.1", ["Host: localhost"]],
  ["POST http://evil.example/x[::1]/swagger/v1/messages HTTP/1.0", []],
  ["POST http://localhost/swagger/../v1/messages HTTP/1.0", []],
  ["POST /v1/messages HTTP/1.1", ["Host: [::1]evil.example"]],
  ["POST /v1/messages HTTP/1.1", ["Host: localhost:evil.example"]],
  ["POST /v1/messages HTTP/1.1", ["Host: localhost/swagger"]],
  ["POST /v1/messages HTTP/1.1", ["Host: a@localhost"]],
  ["POST /v1/messages HTTP/1.1", ["Host: "]],
  ["POST /v1/messages HTTP/1.1", ["Host: localhost", "Host: evil.example"]],
  ["POST /x[::1]/swagger/v1/messages HTTP/1.1", ["Host: localhost"]],
  ["POST /v1%2Fmessages HTTP/1.1", ["Host: localhost"]],
  ["POST /v1%2fmessages HTTP/1.1", ["Host: localhost"]],
  ["POST //v1/messages HTTP/1.1", ["Host: localhost"]],
  ["POST /V1/Messages HTTP/1.1", ["Host: localhost"]],
  ["POST /v1/messages/ HTTP/1.1", ["Host: localhost"]],
  ["POST /swagger/../v1/messages HTTP/1.1", ["Host: localhost"]],
  ["POST /swagger/%2e%2e/v1/messages HTTP/1.1", ["Host: localhost"]],
  ["POST /swagger\\..\\v1\\messages HTTP/1.1", ["Host: localhost"]],
  ["POST /swagger/..%2fv1/messages HTTP/1.1", ["Host: localhost"]],
  ["POST /health/..;/v1/messages HTTP/1.1", ["Host: localhost"]],
  ["POST /v1/messages#/swagger HTTP/1.1", ["Host: localhost"]],
  ["POST /api/hello/../../v1/messages HTTP/1.1", ["Host: localhost"]],
];

const errorShape = { type: "error", error: { type: expect.any(String), message: expect.any(String) }, request_id: expect.stringMatching(/^req_/) };

function suite(name: string, command: () => string[] | undefined) {
  describe(name, () => {
    let upstream: ReturnType<typeof startUpstream>;
    let server: RunningServer;
    let work: string;
    let memFile: string;

    beforeAll(async () => {
      work = mkdtempSync(join(tmpdir(), "pensieve-raw-"));
      memFile = join(work, "available-bytes");
      writeFileSync(memFile, String(16 * 2 ** 30));
      upstream = startUpstream();
      const cmd = command();
      server = await startServer({
        ...(cmd ? { command: cmd, cwd: work } : {}),
        args: ["--backend", "openai", "--upstream", upstream.url, "--memory-source", `file:${memFile}`],
      });
    });

    afterAll(async () => {
      await server?.stop();
      upstream?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    test("no request line or Host form reaches /v1/messages without the token", async () => {
      const answers: string[] = [];
      for (const [line, headers] of NO_TOKEN_ATTACKS) {
        const res = await rawRequest(server.port, line, headers);
        answers.push(`${res.status} ${line} ${headers.join(" ")}`);
        expect([400, 401, 403, 404]).toContain(res.status);
        // Bun's own 400s for targets it cannot read have no body; every answer from Pensieve has the shape.
        if (res.body) expect(JSON.parse(res.body)).toEqual(errorShape);
      }
      expect(upstream.posts).toEqual([]);
      expect(answers.filter((a) => a.startsWith("200"))).toEqual([]);
    });

    test("a malformed or missing Host is refused even with the token", async () => {
      const token = `x-api-key: ${DEFAULT_TOKEN}`;
      for (const host of ["Host: [::1]evil.example", "Host: localhost:evil.example", "Host: localhost:99999", "Host: ::1"]) {
        const res = await rawRequest(server.port, "POST /v1/messages HTTP/1.1", [host, token]);
        expect([res.status, host]).toEqual([400, host]);
        expect(JSON.parse(res.body)).toEqual({ ...errorShape, error: { type: "invalid_request_error", message: expect.any(String) } });
      }
      const foreign = await rawRequest(server.port, "POST /v1/messages HTTP/1.1", ["Host: evil.example:8080", token]);
      expect(foreign.status).toBe(403);
      const hostless = await rawRequest(server.port, "POST /x[::1]/swagger/v1/messages HTTP/1.0", [token]);
      expect(hostless.status).toBe(400);
      expect(upstream.posts).toEqual([]);
    });

    test("the same request with the token and a loopback Host is served (the stand-in sees it)", async () => {
      const res = await rawRequest(server.port, "POST /v1/messages HTTP/1.1", ["Host: localhost", `x-api-key: ${DEFAULT_TOKEN}`]);
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toMatchObject({ type: "message", content: [{ type: "text", text: "Hi there" }] });
      expect(upstream.posts).toEqual(["/v1/chat/completions"]);
      upstream.posts.length = 0;
    });

    test("/health over HTTP/1.0 without Host answers 200 with the public view", async () => {
      const res = await rawRequest(server.port, "GET /health HTTP/1.0", [], "");
      expect(res.status).toBe(200);
      const body = JSON.parse(res.body);
      expect(body).toMatchObject({ status: "ok", ready: true, model: "up-model", engine: { state: "ready" }, memory: { status: "safe", available_gb: 16 } });
      expect(body.engine).toEqual({ state: "ready" });
    });

    test("unauthenticated /health shows no path, pid, upstream or memory source; the token shows them", async () => {
      const open = await (await fetch(`${server.url}/health`)).text();
      for (const secret of [memFile, work, upstream.url, String(server.proc.pid), "workerPid", "source"]) expect(open).not.toContain(secret);
      expect(Object.keys(JSON.parse(open).memory).sort()).toEqual(["available_gb", "status"]);
      const full = await (await fetch(`${server.url}/health`, { headers: { authorization: `Bearer ${DEFAULT_TOKEN}` } })).json();
      expect(full.memory).toMatchObject({ status: "safe", available_gb: 16, source: `file:${memFile}`, in_flight: 0 });
      expect(full.engine).toMatchObject({ state: "ready", queued: 0, running: 0 });
      const wrong = await (await fetch(`${server.url}/health`, { headers: { "x-api-key": "nope" } })).json();
      expect(wrong.engine).toEqual({ state: "ready" });
    });
  });
}

suite("from source", () => undefined);

describe("as the binary", () => {
  beforeAll(buildBinary, 300_000);
  suite("compiled dist/pensieve", () => [BIN]);
});
