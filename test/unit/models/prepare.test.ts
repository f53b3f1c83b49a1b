/** prepareModel through the real `python -m pensieve_bridge.gguf` CLI, on a tiny GGUF written here. */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEMO_MODEL_ID } from "../../../src/models/demo-model";
import { ModelPrepareError, type PrepareOptions, prepareModel } from "../../../src/models/prepare";
import { REPO, testPython } from "../../support/server-process";

setDefaultTimeout(180_000);

let work: string;
let tiny: string;
const lines: string[] = [];
const opts = (over: Partial<PrepareOptions> = {}): PrepareOptions => ({
  python: testPython(),
  bridgeDir: join(REPO, "python_bridge"),
  home: join(work, "home"),
  engine: "mlx",
  engineExplicit: true,
  modelExplicit: true,
  log: (l) => lines.push(l),
  ...over,
});

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "pensieve-prepare-"));
  tiny = join(work, "tiny-llama.gguf");
  const p = Bun.spawn([testPython(), join(REPO, "test/integration/make_tiny_gguf.py"), tiny], { stdout: "ignore", stderr: "inherit" });
  expect(await p.exited).toBe(0);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("prepareModel", () => {
  test("a .gguf on the mlx engine becomes a converted MLX directory under <home>/models, named by the file", async () => {
    const r = await prepareModel(tiny, opts());
    expect(r.engine).toBe("mlx");
    expect(r.modelId).toBe("tiny-llama");
    expect(r.isDemo).toBe(false);
    expect(r.model.startsWith(join(work, "home", "models"))).toBe(true);
    expect(r.model).toMatch(/-tiny-llama-float(32|16)$/);
    for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]) expect(existsSync(join(r.model, f))).toBe(true);
    // Cached: a second prepare returns the same directory.
    expect((await prepareModel(tiny, opts())).model).toBe(r.model);
  });

  test("the llama engine gets the GGUF itself and a tokenizer-only directory (no weights)", async () => {
    const r = await prepareModel(tiny, opts({ engine: "llama" }));
    expect(r.engine).toBe("llama");
    expect(r.model).toBe(tiny);
    const tok = r.tokenizer as string;
    expect(tok).toMatch(/-tiny-llama-tokenizer$/);
    expect(readdirSync(tok).sort()).toEqual(
      ["chat_template.jinja", "config.json", "generation_config.json", "pensieve_source.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"].sort(),
    );
    expect(JSON.parse(readFileSync(join(tok, "tokenizer_config.json"), "utf8")).chat_template).toContain("messages");
    expect(JSON.parse(readFileSync(join(tok, "config.json"), "utf8")).model_type).toBe("llama");
  });

  test("a directory holding a .gguf runs that file on the llama engine", async () => {
    const dir = join(work, "gguf-dir");
    mkdirSync(dir);
    linkSync(tiny, join(dir, "only.gguf"));
    const r = await prepareModel(dir, opts({ engine: "llama" }));
    expect([r.engine, r.model, r.modelId]).toEqual(["llama", join(dir, "only.gguf"), "only"]);
    // On the mlx engine, a directory with no config.json is converted from its GGUF.
    const m = await prepareModel(dir, opts());
    expect([m.engine, m.modelId, existsSync(join(m.model, "model.safetensors"))]).toEqual(["mlx", "only", true]);
  });

  test("ollama:NAME:TAG resolves in an Ollama-layout store (OLLAMA_MODELS)", async () => {
    const store = join(work, "ollama");
    const sha = new Bun.CryptoHasher("sha256").update(readFileSync(tiny)).digest("hex");
    mkdirSync(join(store, "blobs"), { recursive: true });
    linkSync(tiny, join(store, "blobs", `sha256-${sha}`));
    const manifest = join(store, "manifests", "registry.ollama.ai", "library", "tiny", "v1");
    mkdirSync(join(manifest, ".."), { recursive: true });
    writeFileSync(manifest, JSON.stringify({ layers: [{ mediaType: "application/vnd.ollama.image.model", digest: `sha256:${sha}` }] }));
    const r = await prepareModel("ollama:tiny:v1", opts({ env: { OLLAMA_MODELS: store } }));
    expect(r.modelId).toBe("tiny:v1");
    expect(existsSync(join(r.model, "config.json"))).toBe(true);
    // Not there: exit 2, a user error naming the store.
    const err = await prepareModel("ollama:absent", opts({ env: { OLLAMA_MODELS: store } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelPrepareError);
    expect((err as ModelPrepareError).code).toBe(2);
  });

  test("a missing .gguf is a user error (exit 2)", async () => {
    const err = await prepareModel(join(work, "nope.gguf"), opts()).catch((e: unknown) => e);
    expect((err as ModelPrepareError).code).toBe(2);
  });

  test("the defaulted built-in model falls back to the tiny demo when the fetch is impossible", async () => {
    const home = join(work, "offline-home");
    lines.length = 0;
    const env = { PIP_INDEX_URL: "http://127.0.0.1:1/", PIP_RETRIES: "0", PIP_TIMEOUT: "2", PIP_CONFIG_FILE: "/dev/null" };
    const r = await prepareModel("qwen2.5-coder-0.5b-instruct", opts({ home, modelExplicit: false, env }));
    expect(r.isDemo).toBe(true);
    expect(r.modelId).toBe(DEMO_MODEL_ID);
    expect(lines.join("\n")).toMatch(/could not fetch qwen2\.5-coder-0\.5b-instruct .*falling back to the tiny demo model/);
    // Named explicitly, the failure is an error rather than gibberish.
    await expect(prepareModel("qwen2.5-coder-0.5b-instruct", opts({ home, env }))).rejects.toThrow(/fetch failed/);
  });
});
