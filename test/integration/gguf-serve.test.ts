/**
 * `serve` on GGUF sources through the real CLI and worker: a tiny GGUF written here (converted
 * live, progress on stderr), the real Qwen2.5-Coder 0.5B as the default model (PENSIEVE_HOME
 * pre-seeded with a hardlink, so nothing is fetched twice) and `ollama:` refs into a store built here.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openblasPath } from "../../src/models/blas";
import { DEFAULT_TOKEN, REPO, type RunningServer, startServer, testPython } from "../support/server-process";

setDefaultTimeout(600_000);

const MODELS = join(REPO, ".pensieve", "test-models");
const QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const QWEN_SHA = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32";
const haveOpenblas = existsSync(openblasPath() ?? "/nonexistent");
const work = mkdtempSync(join(tmpdir(), "pensieve-gguf-serve-"));
const servers: RunningServer[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  rmSync(work, { recursive: true, force: true });
});

async function python(args: string[], cwd = join(REPO, "python_bridge")): Promise<string> {
  const p = Bun.spawn([testPython(), ...args], { cwd, stdout: "pipe", stderr: "inherit", env: { ...process.env, HF_HUB_OFFLINE: "1" } });
  const [code, out] = await Promise.all([p.exited, new Response(p.stdout).text()]);
  if (code !== 0) throw new Error(`${args.join(" ")} failed (${code})`);
  return out.trim().split("\n").at(-1) as string;
}

async function serve(args: string[], env: Record<string, string | undefined> = {}, home?: string): Promise<RunningServer> {
  const s = await startServer({ args, env, ...(home ? { home } : {}), timeoutMs: 600_000 });
  servers.push(s);
  return s;
}

async function ask(s: RunningServer, text: string, maxTokens = 24): Promise<{ status: number; body: any }> {
  const res = await fetch(`${s.url}/v1/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": DEFAULT_TOKEN, "anthropic-version": "2023-06-01" },
    body: JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: maxTokens, temperature: 0, messages: [{ role: "user", content: text }] }),
  });
  return { status: res.status, body: await res.json() };
}

async function health(s: RunningServer): Promise<any> {
  return (await fetch(`${s.url}/health`, { headers: { "x-api-key": DEFAULT_TOKEN } })).json();
}

const answerText = (body: any): string => (body.content ?? []).map((b: any) => b.text ?? "").join("");

describe("serve --model <tiny GGUF> --engine mlx", () => {
  test("converts with progress on stderr, then serves; the startup line and /health name engine, device and BLAS", async () => {
    const tiny = join(work, "tiny-llama.gguf");
    await python([join(REPO, "test/integration/make_tiny_gguf.py"), tiny], REPO);
    const s = await serve(["--model", tiny, "--engine", "mlx"]);
    expect(s.output()).toContain("converting tiny-llama.gguf");
    expect(s.output()).toMatch(/convert tensors/);
    expect(s.banner).toContain("model tiny-llama [mlx, cpu");
    if (haveOpenblas) expect(s.banner).toMatch(/openblas \d/);
    const r = await ask(s, "hello", 4);
    expect(r.status).toBe(200);
    const h = await health(s);
    expect(h.model).toBe("tiny-llama");
    expect(h.engine.model.runtime).toMatchObject({ engine: "mlx", device: "cpu", dtype: "float32", quantization: null });
    if (haveOpenblas) expect(h.engine.model.runtime.blas).toMatch(/^openblas/);
    await s.stop();
  });
});

describe("the real Qwen2.5-Coder 0.5B", () => {
  let gguf: string;
  let home: string;
  beforeAll(async () => {
    gguf = await python(["-m", "pensieve_bridge.gguf", "fetch", "--models", "0.5b", "--dir", MODELS]);
    home = join(work, "home");
    const cache = join(home, "models", "gguf");
    mkdirSync(cache, { recursive: true });
    linkSync(gguf, join(cache, QWEN_FILE));
    if (existsSync(`${gguf}.sha256`)) copyFileSync(`${gguf}.sha256`, join(cache, `${QWEN_FILE}.sha256`));
    // A conversion made by scripts/fetch-models is the same bytes: hardlink it rather than convert again.
    const converted = join(MODELS, "mlx", `${QWEN_SHA.slice(0, 16)}-qwen2.5-coder-0.5b-instruct-q4_k_m-float32`);
    if (existsSync(join(converted, "config.json"))) {
      const dst = join(home, "models", `${QWEN_SHA.slice(0, 16)}-qwen2.5-coder-0.5b-instruct-q4_k_m-float32`);
      mkdirSync(dst);
      for (const f of readdirSync(converted)) linkSync(join(converted, f), join(dst, f));
    }
  });

  test("is the default model: no --model, served as qwen2.5-coder-0.5b-instruct, and knows the capital of France", async () => {
    const s = await serve(["--engine", "mlx"], { PENSIEVE_MODEL: undefined }, home);
    expect(s.output()).not.toContain("fetching");
    expect(s.banner).toContain("model qwen2.5-coder-0.5b-instruct [mlx, cpu");
    expect(s.banner).not.toMatch(/random weights/i);
    const r = await ask(s, "What is the capital of France?");
    expect(r.status).toBe(200);
    expect(answerText(r.body)).toContain("Paris");
    await s.stop();
  });

  test("--model ollama:NAME:TAG runs the same GGUF from an Ollama-layout store", async () => {
    const store = join(work, "ollama");
    mkdirSync(join(store, "blobs"), { recursive: true });
    linkSync(gguf, join(store, "blobs", `sha256-${QWEN_SHA}`));
    const manifest = join(store, "manifests", "registry.ollama.ai", "library", "qwen2.5-coder", "0.5b");
    mkdirSync(join(manifest, ".."), { recursive: true });
    writeFileSync(manifest, JSON.stringify({ layers: [{ mediaType: "application/vnd.ollama.image.model", digest: `sha256:${QWEN_SHA}` }] }));
    const s = await serve(["--model", "ollama:qwen2.5-coder:0.5b", "--engine", "mlx"], { OLLAMA_MODELS: store }, home);
    expect(s.banner).toContain("model qwen2.5-coder:0.5b");
    const r = await ask(s, "What is the capital of France?");
    expect(r.status).toBe(200);
    expect(answerText(r.body)).toContain("Paris");
    await s.stop();
  });
});
