/**
 * /swagger renders in headless Chromium with the network cut off: every request the page
 * makes must go to the Pensieve server on loopback, and the routes must show up rendered.
 * Chromium is Debian's `chromium` package (set CHROMIUM to use another build).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Elysia, t } from "elysia";
import { appTuning, createApp } from "../../src/app";
import { serveDefaults } from "../../src/config";
import { docsPlugin } from "../../src/docs/plugin";
import { FakeEngine } from "../support/fake-engine";
import { FakeMemoryMonitor } from "../support/fake-memory";
import { REPO, startServer, type RunningServer } from "../support/server-process";

const TITLE = "Pensieve docs test";
const ROUTES = ["/v1/messages", "/v1/models/{id}", "/health"];

/** A small app shaped like Pensieve's: typed JSON routes, a named model, the docs plugin. */
function startDocsServer() {
  const Message = t.Object({ role: t.Union([t.Literal("user"), t.Literal("assistant")]), content: t.String() });
  const app = new Elysia()
    .use(docsPlugin({ title: TITLE, version: "0.0.0-test", description: "docs under test" }))
    .model({ MessagesResponse: t.Object({ id: t.String(), type: t.Literal("message"), content: t.Array(t.Object({ type: t.String(), text: t.String() })) }) })
    .post("/v1/messages", () => ({ id: "msg_1", type: "message" as const, content: [] }), {
      body: t.Object({ model: t.String(), max_tokens: t.Integer(), messages: t.Array(Message) }),
      response: { 200: "MessagesResponse" },
      detail: { summary: "Create a message" },
    })
    .get("/v1/models/:id", ({ params }) => ({ id: params.id, type: "model" }), { params: t.Object({ id: t.String() }) })
    .get("/health", () => ({ status: "ok" }), { response: t.Object({ status: t.String() }) });
  return listen(app);
}

/** Pensieve's own app (createApp with the fake engine and memory monitor). */
function startPensieveApp() {
  const app = createApp({
    engine: new FakeEngine(),
    memory: new FakeMemoryMonitor(),
    config: { ...appTuning(serveDefaults()), token: "test-token", aliases: "*=default", allowedHosts: [], version: "0.0.0-test" },
  });
  return listen(app);
}

function listen(app: { listen(o: { hostname: string; port: number }): { server: { port?: number } | null; stop(closeActive?: boolean): unknown } }) {
  const running = app.listen({ hostname: "127.0.0.1", port: 0 });
  return { url: `http://127.0.0.1:${running.server!.port}`, stop: () => running.stop(true) };
}
type Server = ReturnType<typeof listen>;

// ---- a minimal Chrome DevTools Protocol client over Bun's WebSocket ----
type CdpEvent = { method: string; params: Record<string, any>; sessionId?: string };

class Cdp {
  private nextId = 1;
  private pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private listeners: ((e: CdpEvent) => void)[] = [];

  private constructor(private ws: WebSocket) {
    ws.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data));
      if (msg.id !== undefined) {
        const p = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        if (msg.error) p?.reject(new Error(`CDP ${msg.error.message}`));
        else p?.resolve(msg.result);
      } else {
        for (const l of this.listeners) l(msg);
      }
    };
  }

  static connect(url: string): Promise<Cdp> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onopen = () => resolve(new Cdp(ws));
      ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
    });
  }

  send(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<any> {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  on(listener: (e: CdpEvent) => void) {
    this.listeners.push(listener);
  }

  close() {
    this.ws.close();
  }
}

function chromiumPath(): string {
  const path = process.env.CHROMIUM ?? Bun.which("chromium") ?? "/usr/bin/chromium";
  if (!existsSync(path)) {
    throw new Error(`Chromium not found at ${path}: install Debian's package (apt-get install -y chromium) or set CHROMIUM`);
  }
  return path;
}

async function launchChromium(profile: string) {
  const proc = Bun.spawn([
    chromiumPath(),
    "--headless",
    "--no-sandbox", // tests run as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    `--user-data-dir=${profile}`,
    "--remote-debugging-port=0",
    // Cut the network off: every proxied request goes to a closed port (loopback is
    // never proxied) and every host name except the loopback address fails to resolve.
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    // No background traffic of Chromium's own.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "about:blank",
  ], { stdout: "ignore", stderr: "pipe", stdin: "ignore" });
  let stderr = "";
  void (async () => {
    const reader = proc.stderr.getReader();
    const decoder = new TextDecoder();
    for (let r = await reader.read(); !r.done; r = await reader.read()) stderr += decoder.decode(r.value, { stream: true });
  })();
  // Chromium writes its DevTools port and browser path here once it listens.
  const portFile = join(profile, "DevToolsActivePort");
  const deadline = Date.now() + 60_000;
  while (!existsSync(portFile) || readFileSync(portFile, "utf8").split("\n").length < 2) {
    if (proc.exitCode !== null) throw new Error(`chromium exited early (${proc.exitCode}):\n${stderr}`);
    if (Date.now() > deadline) throw new Error(`chromium did not open its DevTools port:\n${stderr}`);
    await Bun.sleep(50);
  }
  const [port, path] = readFileSync(portFile, "utf8").split("\n");
  return { proc, wsUrl: `ws://127.0.0.1:${port}${path}`, stderr: () => stderr };
}

/** What the rendered page shows, and every request it made. */
interface Rendered {
  title: string;
  paths: string[];
  methods: string[];
  models: string[];
  external: string[];
  responses: Map<string, number>;
  pageErrors: string[];
}

/** Opens `${base}/swagger` in a fresh tab and waits (bounded) until `paths` are rendered. */
async function renderOffline(c: Cdp, base: string, paths: readonly string[]): Promise<Rendered> {
  const origin = new URL(base).origin;
  const requests: string[] = [];
  const responses = new Map<string, number>();
  const pageErrors: string[] = [];

  const { targetId } = await c.send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await c.send("Target.attachToTarget", { targetId, flatten: true });
  c.on((e) => {
    if (e.sessionId !== sessionId) return;
    if (e.method === "Network.requestWillBeSent") requests.push(e.params.request.url);
    if (e.method === "Network.responseReceived") responses.set(e.params.response.url, e.params.response.status);
    if (e.method === "Runtime.exceptionThrown") pageErrors.push(JSON.stringify(e.params.exceptionDetails));
    if (e.method === "Fetch.requestPaused") {
      // Anything not for the server is refused here too, before it reaches the (dead) proxy.
      const url: string = e.params.request.url;
      const params = { requestId: e.params.requestId };
      void (url.startsWith(`${origin}/`)
        ? c.send("Fetch.continueRequest", params, sessionId)
        : c.send("Fetch.failRequest", { ...params, errorReason: "BlockedByClient" }, sessionId));
    }
  });
  await c.send("Network.enable", {}, sessionId);
  await c.send("Runtime.enable", {}, sessionId);
  await c.send("Fetch.enable", { patterns: [{ urlPattern: "*" }] }, sessionId);
  await c.send("Page.enable", {}, sessionId);
  await c.send("Page.navigate", { url: `${base}/swagger` }, sessionId);

  const probe = `JSON.stringify({
    title: document.querySelector(".swagger-ui .info .title")?.textContent ?? "",
    paths: [...document.querySelectorAll(".opblock .opblock-summary-path")].map((e) => e.textContent.replace(/\\u200b/g, "")),
    methods: [...document.querySelectorAll(".opblock .opblock-summary-method")].map((e) => e.textContent.toUpperCase()),
    models: [...document.querySelectorAll(".models .model-container")].map((e) => e.getAttribute("data-name")),
  })`;
  let seen = { title: "", paths: [] as string[], methods: [] as string[], models: [] as string[] };
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const { result } = await c.send("Runtime.evaluate", { expression: probe, returnByValue: true }, sessionId);
    seen = JSON.parse(result.value);
    if (paths.every((p) => seen.paths.includes(p)) || pageErrors.length > 0) break;
    await Bun.sleep(200);
  }
  await c.send("Target.closeTarget", { targetId });
  const external = requests.filter((u) => !u.startsWith(`${origin}/`) && !/^(data|blob|about):/.test(u));
  return { ...seen, external, responses, pageErrors };
}

/** The checks every docs page must pass: nothing off the server, assets and spec served by it. */
function expectServedOffline(r: Rendered, base: string) {
  expect(r.external).toEqual([]);
  expect(r.pageErrors).toEqual([]);
  for (const path of ["/swagger/assets/swagger-ui-bundle.js", "/swagger/assets/swagger-ui.css", "/swagger/json"]) {
    expect({ path, status: r.responses.get(`${base}${path}`) }).toEqual({ path, status: 200 });
  }
}

async function expectHtmlNamesNoHost(base: string) {
  const html = await (await fetch(`${base}/swagger`)).text();
  expect(html).not.toMatch(/(https?:)?\/\/[a-z0-9.-]+\.[a-z]{2,}/i);
  const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
  expect(refs.length).toBeGreaterThan(0);
  expect(refs.filter((ref) => !ref.startsWith("/swagger/assets/"))).toEqual([]);
}

describe("/swagger in headless Chromium, offline", () => {
  let chromium: Awaited<ReturnType<typeof launchChromium>> | undefined;
  let cdp: Cdp | undefined;
  const servers: Server[] = [];
  let binaryServer: RunningServer | undefined;
  const profile = mkdtempSync(join(tmpdir(), "pensieve-chromium-"));

  beforeAll(async () => {
    chromium = await launchChromium(profile);
    cdp = await Cdp.connect(chromium.wsUrl);
  }, 90_000);

  afterAll(async () => {
    await binaryServer?.stop();
    if (chromium) {
      // Browser.close lets Chromium take its helper processes down with it; the kill
      // (by pid) is the fallback.
      await Promise.race([cdp?.send("Browser.close").catch(() => undefined), Bun.sleep(5_000)]);
      if (chromium.proc.exitCode === null) chromium.proc.kill();
      await chromium.proc.exited;
    }
    cdp?.close();
    for (const s of servers) s.stop();
    rmSync(profile, { recursive: true, force: true });
  });

  test("docsPlugin alone: every route and model of the app is rendered from local assets", async () => {
    const server = startDocsServer();
    servers.push(server);
    await expectHtmlNamesNoHost(server.url);
    const r = await renderOffline(cdp!, server.url, ROUTES);
    expectServedOffline(r, server.url);
    expect([...r.paths].sort()).toEqual([...ROUTES].sort());
    expect([...r.methods].sort()).toEqual(["GET", "GET", "POST"]);
    expect(r.title).toContain(TITLE);
    expect(r.models).toContain("MessagesResponse");
  }, 120_000);

  test("Pensieve's app: /v1/messages and every other documented route are rendered", async () => {
    const server = startPensieveApp();
    servers.push(server);
    await expectHtmlNamesNoHost(server.url);
    const spec = (await (await fetch(`${server.url}/swagger/json`)).json()) as { paths: Record<string, object> };
    const documented = Object.keys(spec.paths);
    expect(documented).toContain("/v1/messages");
    const r = await renderOffline(cdp!, server.url, documented);
    expectServedOffline(r, server.url);
    expect([...new Set(r.paths)].sort()).toEqual([...documented].sort());
    expect(r.models).toContain("MessagesRequest");
  }, 120_000);

  test("the compiled binary serves /swagger and its assets from inside itself", async () => {
    const bin = join(REPO, "dist", "pensieve");
    if (!existsSync(bin)) {
      const build = Bun.spawnSync([process.execPath, "run", "build"], { cwd: REPO });
      if (build.exitCode !== 0) throw new Error(`bun run build failed:\n${build.stderr.toString()}`);
    }
    // An unreachable upstream: the server still starts and serves its docs, with no model to load.
    const cwd = mkdtempSync(join(tmpdir(), "pensieve-swagger-cwd-"));
    try {
      binaryServer = await startServer({ command: [bin], cwd, args: ["--backend", "openai", "--upstream", "http://127.0.0.1:9/v1"] });
      await expectHtmlNamesNoHost(binaryServer.url);
      const spec = (await (await fetch(`${binaryServer.url}/swagger/json`)).json()) as { paths: Record<string, object> };
      const documented = Object.keys(spec.paths);
      expect(documented).toContain("/v1/messages");
      const r = await renderOffline(cdp!, binaryServer.url, documented);
      expectServedOffline(r, binaryServer.url);
      expect([...new Set(r.paths)].sort()).toEqual([...documented].sort());
      expect(r.models).toContain("MessagesRequest");
    } finally {
      await binaryServer?.stop();
      rmSync(cwd, { recursive: true, force: true });
    }
  }, 180_000);
});
