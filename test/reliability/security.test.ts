/**
 * Security against the real server: loopback-only binding by default, the DNS-rebinding Host
 * check, no CORS unless configured, token checks, and logs (server and emergency log) that
 * never hold prompt text, generated text or tokens — checked by planting a secret in prompts
 * and running every path that logs, ending with an emergency drill via --memory-source.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import {
  LOOPBACK_HEX,
  type RunningServer,
  type SpawnedServer,
  TOKEN,
  deadline,
  deltaText,
  errorShapeProblems,
  health,
  pidAlive,
  sseFrames,
  type SseFrame,
  spawnServer,
  startTinyServer,
  tcpTable,
  tinyModelDir,
  waitFor,
} from "./support";

setDefaultTimeout(180_000);

const GB = 1024 ** 3;
const body = (extra: Record<string, unknown> = {}) => ({
  model: "claude-sonnet-4-5",
  max_tokens: 8,
  messages: [{ role: "user", content: "hi" }],
  ...extra,
});

function accessControlHeaders(h: Headers): string[] {
  const names: string[] = [];
  h.forEach((_, k) => {
    if (k.toLowerCase().startsWith("access-control-")) names.push(k);
  });
  return names;
}

/** Connects to host:port; resolves "connected", the error code, or "timeout". */
function tryConnect(host: string, port: number, ms = 3000): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (what: string) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(what);
    };
    const timer = setTimeout(() => done("timeout"), ms);
    sock.once("connect", () => done("connected"));
    sock.once("error", (err: NodeJS.ErrnoException) => done(err.code ?? String(err)));
  });
}

describe("configured: --allowed-hosts and --cors-origins", () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startTinyServer(["--allowed-hosts", "evil.example", "--cors-origins", "http://good.example"]);
  });
  afterAll(async () => {
    await server?.stop();
  });

  const call = (path: string, headers: Record<string, string>, init: RequestInit = {}) =>
    fetch(server.url + path, { ...init, headers: { "x-api-key": TOKEN, "content-type": "application/json", ...headers } });

  test("a configured Host name is served; other names still get 403", async () => {
    for (const host of ["evil.example", `evil.example:${server.port}`, "EVIL.example"]) {
      const res = await call("/v1/messages", { host }, { method: "POST", body: JSON.stringify(body()) });
      expect({ host, status: res.status }).toEqual({ host, status: 200 });
      await res.text();
    }
    for (const host of ["other.example", "sub.evil.example", "evil.example.attacker.test"]) {
      const res = await call("/v1/messages", { host }, { method: "POST", body: JSON.stringify(body()) });
      const text = await res.text();
      expect({ host, status: res.status }).toEqual({ host, status: 403 });
      expect(errorShapeProblems(res.status, res.headers, text)).toEqual([]);
    }
  });

  test("CORS headers only for the configured origin; its preflight passes without a token", async () => {
    const good = await call("/v1/messages", { origin: "http://good.example" }, { method: "POST", body: JSON.stringify(body()) });
    await good.text();
    expect(good.status).toBe(200);
    expect(good.headers.get("access-control-allow-origin")).toBe("http://good.example");

    const preflight = await fetch(`${server.url}/v1/messages`, {
      method: "OPTIONS",
      headers: { origin: "http://good.example", "access-control-request-method": "POST", "access-control-request-headers": "content-type, x-api-key" },
    });
    await preflight.text();
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("http://good.example");
    expect(preflight.headers.get("access-control-allow-methods")).toContain("POST");

    const evil = await call("/v1/messages", { origin: "http://evil.example" }, { method: "POST", body: JSON.stringify(body()) });
    await evil.text();
    expect(accessControlHeaders(evil.headers)).toEqual([]);
    const evilPreflight = await fetch(`${server.url}/v1/messages`, {
      method: "OPTIONS",
      headers: { origin: "http://evil.example", "access-control-request-method": "POST" },
    });
    await evilPreflight.text();
    expect(accessControlHeaders(evilPreflight.headers)).toEqual([]);
    expect(evilPreflight.status).not.toBe(204);
  });
});

describe("defaults: binding, Host check, CORS, tokens, and what the logs hold", () => {
  const SECRET = `PSV-SECRET-${crypto.randomUUID()}`;
  const MY_TOKEN = `tok-${crypto.randomUUID()}`;
  const WRONG_TOKEN = `wrong-${crypto.randomUUID()}`;
  const dir = mkdtempSync(join(tmpdir(), "pensieve-rel-sec-"));
  const memFile = join(dir, "available-bytes");
  const logDir = join(dir, "logs");
  let server: SpawnedServer;
  const generated: string[] = [];

  /** Atomic write, so the sampler never reads a half-written number. */
  const setAvailable = (bytes: number) => {
    writeFileSync(`${memFile}.tmp`, String(Math.round(bytes)));
    renameSync(`${memFile}.tmp`, memFile);
  };
  const post = (path: string, json: unknown, headers: Record<string, string> = {}) =>
    fetch(server.url + path, {
      method: "POST",
      headers: { "x-api-key": MY_TOKEN, "content-type": "application/json", ...headers },
      body: JSON.stringify(json),
    });
  const memoryStatus = async () => (await health(server.url)).memory?.status;

  beforeAll(async () => {
    setAvailable(16 * GB);
    const model = await tinyModelDir();
    server = await spawnServer(
      ["--model", model, "--token", MY_TOKEN, "--memory-source", `file:${memFile}`, "--log-dir", logDir, "--drain-timeout-ms", "1000", "--memory-interval-ms", "250"],
      // As much logging as there is: debug lines must be clean too.
      { PENSIEVE_LOG_LEVEL: "debug" },
    );
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("without --host the server listens on 127.0.0.1 only", async () => {
    expect(server.startupLine).toContain(`listening on http://127.0.0.1:${server.port}`);
    const table = tcpTable();
    if (table) {
      const listening = table.filter((e) => e.localPort === server.port && e.state === "0A");
      expect(listening.length).toBeGreaterThan(0);
      expect(listening.filter((e) => !LOOPBACK_HEX.has(e.local))).toEqual([]);
    }
    // Connecting to this machine's own non-loopback addresses stays on the machine; it must be refused.
    const addrs = Object.values(networkInterfaces())
      .flat()
      .filter((a): a is NonNullable<typeof a> => !!a && !a.internal && !a.address.startsWith("fe80"));
    const results: Record<string, string> = {};
    for (const a of addrs) results[a.address] = await tryConnect(a.address, server.port);
    console.log(`[security] non-loopback addresses: ${JSON.stringify(results)}${addrs.length ? "" : " (none on this machine)"}`);
    for (const [addr, r] of Object.entries(results)) expect({ addr, r }).toEqual({ addr, r: "ECONNREFUSED" });
    expect(await tryConnect("127.0.0.1", server.port)).toBe("connected");
  });

  test("DNS rebinding: a Host header that is not a loopback name gets 403 on every route", async () => {
    const hosts = ["evil.example", `evil.example:${server.port}`, "localhost.evil.example", "127.0.0.1.nip.io", "0.0.0.0", "localhost.", "[::2]"];
    const routes: [string, RequestInit][] = [
      ["/v1/messages", { method: "POST", body: JSON.stringify(body()) }],
      ["/v1/messages/count_tokens", { method: "POST", body: JSON.stringify({ model: "x", messages: [{ role: "user", content: "hi" }] }) }],
      ["/v1/models", {}],
      ["/health", {}],
      ["/api/hello", {}],
      ["/swagger", {}],
    ];
    for (const host of hosts)
      for (const [path, init] of routes) {
        const res = await fetch(server.url + path, { ...init, headers: { host, "x-api-key": MY_TOKEN, "content-type": "application/json" } });
        const text = await res.text();
        expect({ host, path, status: res.status }).toEqual({ host, path, status: 403 });
        expect(errorShapeProblems(res.status, res.headers, text)).toEqual([]);
        expect(JSON.parse(text).error.type).toBe("permission_error");
      }
    for (const host of [`localhost:${server.port}`, `127.0.0.1:${server.port}`, `[::1]:${server.port}`, "LOCALHOST"]) {
      const res = await fetch(`${server.url}/v1/models`, { headers: { host, "x-api-key": MY_TOKEN } });
      await res.text();
      expect({ host, status: res.status }).toEqual({ host, status: 200 });
    }
  });

  test("no CORS headers unless configured, on any route or preflight", async () => {
    const origin = "http://evil.example";
    const answers = [
      await post("/v1/messages", body(), { origin }),
      await post("/v1/messages", body({ stream: true }), { origin }),
      await fetch(`${server.url}/health`, { headers: { origin } }),
      await fetch(`${server.url}/v1/models`, { headers: { origin, "x-api-key": MY_TOKEN } }),
      await fetch(`${server.url}/v1/messages`, { method: "OPTIONS", headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "x-api-key" } }),
      await fetch(`${server.url}/v1/messages`, { method: "POST", headers: { origin, "content-type": "application/json" }, body: "{}" }),
    ];
    for (const res of answers) {
      await res.text();
      expect(accessControlHeaders(res.headers)).toEqual([]);
    }
    expect(answers[0]!.status).toBe(200);
  });

  test("a wrong or missing token gets an Anthropic 401 (x-api-key and Bearer); open routes need none", async () => {
    const wrong: Record<string, string>[] = [
      {},
      { "x-api-key": "" },
      { "x-api-key": WRONG_TOKEN },
      { "x-api-key": MY_TOKEN.slice(0, -1) },
      { "x-api-key": `${MY_TOKEN}x` },
      { "x-api-key": MY_TOKEN.toUpperCase() },
      { authorization: `Bearer ${WRONG_TOKEN}` },
      { authorization: `Basic ${btoa(`user:${MY_TOKEN}`)}` },
      { authorization: MY_TOKEN },
      { authorization: "Bearer " },
      // x-api-key wins over Authorization when both are sent.
      { "x-api-key": WRONG_TOKEN, authorization: `Bearer ${MY_TOKEN}` },
    ];
    for (const path of ["/v1/messages", "/v1/messages/count_tokens", "/v1/models"]) {
      for (const headers of wrong) {
        const init: RequestInit =
          path === "/v1/models" ? { headers } : { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body()) };
        const res = await fetch(server.url + path, init);
        const text = await res.text();
        expect({ path, headers, status: res.status }).toEqual({ path, headers, status: 401 });
        expect(errorShapeProblems(res.status, res.headers, text)).toEqual([]);
        expect(JSON.parse(text).error.type).toBe("authentication_error");
      }
    }
    for (const headers of [{ "x-api-key": MY_TOKEN }, { authorization: `Bearer ${MY_TOKEN}` }, { authorization: `bearer  ${MY_TOKEN} ` }] as Record<string, string>[]) {
      const res = await fetch(`${server.url}/v1/messages`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body()) });
      await res.text();
      expect({ headers, status: res.status }).toEqual({ headers, status: 200 });
    }
    for (const path of ["/health", "/api/hello"]) expect((await fetch(server.url + path)).status).toBe(200);
    expect((await fetch(`${server.url}/api/hello`, { method: "HEAD" })).status).toBe(200);
  });

  test("a secret planted in prompts never reaches the logs or the emergency log, through every path that logs", async () => {
    const readStream = async (res: Response, stopAfterFirstDelta = false) => {
      const frames: SseFrame[] = [];
      const it = sseFrames(res.body!);
      for (;;) {
        const r = await deadline(it.next(), 60_000, "stream frames");
        if (r.done) break;
        frames.push(r.value);
        if (stopAfterFirstDelta && r.value.event === "content_block_delta") return { frames, it };
      }
      return { frames, it };
    };

    // 1. A stream.
    const s1 = await post("/v1/messages", {
      model: "claude-sonnet-4-5",
      max_tokens: 48,
      stream: true,
      system: `Remember the code ${SECRET}.`,
      messages: [{ role: "user", content: `Repeat ${SECRET} back to me.` }],
    });
    expect(s1.status).toBe(200);
    generated.push(deltaText((await readStream(s1)).frames));

    // 2. Non-streaming, with tools, a tool call and its result.
    const tools = [{ name: "lookup", description: `Looks up ${SECRET}`, input_schema: { type: "object", properties: { q: { type: "string", description: SECRET } } } }];
    const history = [
      { role: "user", content: `Find ${SECRET}` },
      { role: "assistant", content: [{ type: "text", text: `Looking up ${SECRET}` }, { type: "tool_use", id: "toolu_sec01", name: "lookup", input: { q: SECRET } }] },
      { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_sec01", content: `found ${SECRET}` }] },
    ];
    const j = await post("/v1/messages", { model: "claude-sonnet-4-5", max_tokens: 48, tools, messages: history });
    expect(j.status).toBe(200);
    generated.push(((await j.json()).content as { type: string; text?: string }[]).map((b) => b.text ?? "").join(""));

    // 3. count_tokens.
    const c = await post("/v1/messages/count_tokens", { model: "claude-sonnet-4-5", tools, messages: history });
    expect(c.status).toBe(200);
    expect((await c.json()).input_tokens).toBeGreaterThan(0);

    // 4. Errors: unknown tool id, bad role, prompt too long, a wrong token, and a worker crash mid-stream.
    const e1 = await post("/v1/messages", body({ messages: [{ role: "user", content: [{ type: "tool_result", tool_use_id: `toolu_${SECRET}`, content: SECRET }] }] }));
    expect(e1.status).toBe(400);
    await e1.text();
    const e2 = await post("/v1/messages", body({ messages: [{ role: SECRET, content: SECRET }] }));
    expect(e2.status).toBe(400);
    await e2.text();
    const e3 = await post("/v1/messages/count_tokens", { model: "x", messages: [{ role: "user", content: `${SECRET} ${"lorem ipsum ".repeat(40_000)}` }] });
    await e3.text();
    const e3b = await post("/v1/messages", body({ messages: [{ role: "user", content: `${SECRET} ${"lorem ipsum ".repeat(40_000)}` }] }));
    expect(e3b.status).toBe(400);
    expect((await e3b.json()).error.message).toContain("prompt is too long");
    const e4 = await post("/v1/messages", body({ messages: [{ role: "user", content: SECRET }] }), { "x-api-key": WRONG_TOKEN });
    expect(e4.status).toBe(401);
    await e4.text();
    const crash = await post("/v1/messages", { ...body(), max_tokens: 4000, temperature: 0, stream: true, messages: [{ role: "user", content: `Talk about ${SECRET} forever` }] });
    const crashed = await readStream(crash, true);
    const victim = (await health(server.url, MY_TOKEN)).engine.workerPid!;
    process.kill(victim, "SIGKILL");
    for (;;) {
      const r = await deadline(crashed.it.next(), 30_000, "the crashed stream to end");
      if (r.done) break;
      crashed.frames.push(r.value);
    }
    expect(crashed.frames.at(-1)?.event).toBe("error");
    generated.push(deltaText(crashed.frames));
    await waitFor(async () => {
      const h = await health(server.url, MY_TOKEN);
      return h.ready && h.engine.workerPid && h.engine.workerPid !== victim;
    }, "the worker to restart", 60_000);

    // 5. Critical memory: a 503 that names memory, with retry hints.
    setAvailable(0.8 * GB);
    await waitFor(async () => (await memoryStatus()) === "critical", "memory status critical", 20_000);
    const refused = await post("/v1/messages", body({ messages: [{ role: "user", content: SECRET }] }));
    const refusedText = await refused.text();
    expect(refused.status).toBe(503);
    expect(errorShapeProblems(refused.status, refused.headers, refusedText)).toEqual([]);
    expect(JSON.parse(refusedText).error.type).toBe("overloaded_error");
    expect(JSON.parse(refusedText).error.message).toMatch(/memory/i);
    expect(Number(refused.headers.get("retry-after"))).toBeLessThanOrEqual(60);
    expect(refused.headers.get("x-should-retry")).toBe("true");

    // 6. Warning: served (with a logged warning); a long stream is in flight when memory collapses.
    setAvailable(1.5 * GB);
    await waitFor(async () => (await memoryStatus()) === "warning", "memory status warning", 20_000);
    const last = await post("/v1/messages", { ...body(), max_tokens: 4000, temperature: 0, stream: true, messages: [{ role: "user", content: `Go on about ${SECRET}` }] });
    expect(last.status).toBe(200);
    const inFlight = await readStream(last, true);

    // 7. Emergency drill: the stream ends with an error event (not a hang) and the server exits 1.
    const lastWorker = (await health(server.url, MY_TOKEN)).engine.workerPid!;
    setAvailable(1000);
    for (;;) {
      const r = await deadline(inFlight.it.next(), 30_000, "the in-flight stream to end in the emergency");
      if (r.done) break;
      inFlight.frames.push(r.value);
    }
    generated.push(deltaText(inFlight.frames));
    expect(inFlight.frames.at(-1)?.event).toBe("error");
    expect(inFlight.frames.map((f) => f.event)).not.toContain("message_stop");
    const code = await deadline(server.proc.exited, 30_000, "the server to exit after the emergency");
    expect(code).toBe(1);
    // The bridge was stopped, not orphaned.
    await waitFor(() => !pidAlive(lastWorker), "the worker to be gone after the emergency exit", 15_000);

    // The emergency log: figures and ids only.
    const logs = readdirSync(logDir).filter((f) => /^pensieve-emergency-.+\.log$/.test(f));
    expect(logs.length).toBe(1);
    const emergencyText = readFileSync(join(logDir, logs[0]!), "utf8");
    const record = JSON.parse(emergencyText);
    expect(typeof record.reason).toBe("string");
    expect(record.memory.source).toContain("file:");
    expect(record.in_flight.length).toBeGreaterThan(0);
    for (const entry of record.in_flight) expect(Object.keys(entry).sort()).toEqual(["age_ms", "id", "route", "streaming"]);

    // The grep.
    await server.stop();
    const stdout = server.stdout();
    const stderr = server.stderr();
    expect(stderr).toContain("EMERGENCY");
    const texts = generated.filter((g) => g.length > 0);
    expect(texts.length).toBeGreaterThanOrEqual(3);
    const fragments = texts.flatMap(fragmentsOf);
    const places: [string, string][] = [
      ["stdout", stdout.split("\n").filter((l) => !l.includes(" listening on ")).join("\n")],
      ["stderr", stderr],
      ["emergency log", emergencyText],
    ];
    const leaks: string[] = [];
    for (const [where, hay] of places) {
      if (hay.includes(SECRET)) leaks.push(`${where}: the planted secret`);
      if (hay.includes(MY_TOKEN)) leaks.push(`${where}: the server token`);
      if (hay.includes(WRONG_TOKEN)) leaks.push(`${where}: a presented (wrong) token`);
      for (const f of fragments) if (hay.includes(f)) leaks.push(`${where}: generated text ${JSON.stringify(f)}`);
    }
    console.log(
      `[security] grepped ${stdout.length + stderr.length} bytes of logs and a ${emergencyText.length}-byte emergency log ` +
        `for the secret, 2 tokens and ${fragments.length} fragments of ${texts.join("").length} generated characters`,
    );
    expect(leaks).toEqual([]);
    // A custom token is a secret: even the startup line only says to use it.
    expect(stdout.includes(MY_TOKEN)).toBe(false);
    expect(stdout).toContain("ANTHROPIC_API_KEY=<your --token>");
  });
});

/** Distinctive pieces of generated text: 24-character windows with at least 10 letters or digits. */
function fragmentsOf(text: string): string[] {
  const alnum = (s: string) => (s.match(/[\p{L}\p{N}]/gu) ?? []).length;
  if (text.length <= 24) return alnum(text) >= 10 ? [text] : [];
  const out: string[] = [];
  for (let i = 0; i + 24 <= text.length; i += 6) {
    const w = text.slice(i, i + 24);
    if (alnum(w) >= 10) out.push(w);
  }
  return out;
}
