import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_MODEL, UsageError } from "../../../src/config";
import { blasEnv, openblasPath, physicalCores } from "../../../src/models/blas";
import { chooseEngine } from "../../../src/models/engine";
import { modelIdOf, parseModelSpec } from "../../../src/models/spec";

const work = mkdtempSync(join(tmpdir(), "pensieve-spec-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const mlxDir = join(work, "my-mlx");
mkdirSync(mlxDir);
writeFileSync(join(mlxDir, "config.json"), "{}");
const ggufDir = join(work, "with-gguf");
mkdirSync(ggufDir);
writeFileSync(join(ggufDir, "m.Q4_K_M.gguf"), "");

describe("parseModelSpec", () => {
  test("names: the built-in default, demo-tiny, ollama refs", () => {
    expect(parseModelSpec(DEFAULT_MODEL)).toEqual({ kind: "builtin", name: DEFAULT_MODEL, fetchKey: "0.5b" });
    expect(parseModelSpec("demo-tiny")).toEqual({ kind: "demo" });
    expect(parseModelSpec("ollama:qwen2.5-coder:0.5b")).toEqual({ kind: "ollama", ref: "ollama:qwen2.5-coder:0.5b" });
  });

  test("paths: a .gguf file (even missing: the CLI says so), ~ expanded, directories with their GGUFs", () => {
    expect(parseModelSpec("~/m/x.GGUF", "/home/u")).toEqual({ kind: "gguf", path: "/home/u/m/x.GGUF" });
    expect(parseModelSpec(mlxDir)).toEqual({ kind: "dir", path: mlxDir, ggufs: [] });
    expect(parseModelSpec(ggufDir)).toEqual({ kind: "dir", path: ggufDir, ggufs: [join(ggufDir, "m.Q4_K_M.gguf")] });
  });

  test("anything else is a Hugging Face id", () => {
    expect(parseModelSpec("mlx-community/Qwen2.5-Coder-7B-Instruct-4bit")).toEqual({ kind: "hub", id: "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit" });
  });

  test("served ids are names, never cache-directory hashes", () => {
    expect(modelIdOf(parseModelSpec(DEFAULT_MODEL))).toBe("qwen2.5-coder-0.5b-instruct");
    expect(modelIdOf(parseModelSpec("/x/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))).toBe("qwen2.5-coder-0.5b-instruct-q4_k_m");
    expect(modelIdOf(parseModelSpec("ollama:qwen2.5-coder:0.5b"))).toBe("qwen2.5-coder:0.5b");
    expect(modelIdOf(parseModelSpec(mlxDir))).toBeUndefined();
  });
});

describe("chooseEngine", () => {
  const gguf = parseModelSpec("/x/m.gguf");
  test("mlx runs everything", () => {
    for (const raw of [DEFAULT_MODEL, "/x/m.gguf", mlxDir, "org/model"]) expect(chooseEngine(parseModelSpec(raw), "mlx", true).engine).toBe("mlx");
  });

  test("llama runs GGUFs, and a directory's single .gguf", () => {
    expect(chooseEngine(gguf, "llama", true, true)).toEqual({ engine: "llama" });
    expect(chooseEngine(parseModelSpec(ggufDir), "llama", true, true)).toEqual({ engine: "llama", gguf: join(ggufDir, "m.Q4_K_M.gguf") });
  });

  test("an explicit llama on an MLX directory or hub id is a clear usage error", () => {
    expect(() => chooseEngine(parseModelSpec(mlxDir), "llama", true)).toThrow(UsageError);
    expect(() => chooseEngine(parseModelSpec(mlxDir), "llama", true)).toThrow(/holds none.*--engine mlx/);
    expect(() => chooseEngine(parseModelSpec("org/model"), "llama", true)).toThrow(/Hugging Face id org\/model is not one/);
  });

  test("a defaulted llama falls back to mlx for MLX models, and where the llama.cpp libraries are missing", () => {
    expect(chooseEngine(parseModelSpec(mlxDir), "llama", false).engine).toBe("mlx");
    expect(chooseEngine(parseModelSpec("demo-tiny"), "llama", false).engine).toBe("mlx");
    const notReady = chooseEngine(gguf, "llama", false, false);
    expect(notReady.engine).toBe("mlx");
    expect(notReady.note).toMatch(/llama.cpp libraries .* are not installed/);
    expect(chooseEngine(gguf, "llama", false, true).engine).toBe("llama");
    // Explicit: passed on, so the worker's answer (and the server's explanation) is seen.
    expect(chooseEngine(gguf, "llama", true, false).engine).toBe("llama");
  });
});

describe("blasEnv", () => {
  test("preloads Debian's OpenBLAS on Linux when present, one thread per physical core", () => {
    const lib = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3";
    expect(openblasPath("linux", "x64")).toBe(lib);
    expect(openblasPath("linux", "arm64")).toBe("/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3");
    expect(openblasPath("darwin", "arm64")).toBeUndefined();
    const yes = () => true;
    expect(blasEnv({ platform: "linux", arch: "x64", env: {}, exists: yes, cores: 8 })).toEqual({ LD_PRELOAD: lib, OPENBLAS_NUM_THREADS: "8" });
    expect(blasEnv({ platform: "linux", arch: "x64", env: { LD_PRELOAD: "/a.so", OPENBLAS_NUM_THREADS: "3" }, exists: yes, cores: 8 })).toEqual({ LD_PRELOAD: `${lib}:/a.so` });
    expect(blasEnv({ platform: "linux", arch: "x64", env: {}, exists: () => false, cores: 8 })).toEqual({});
    expect(blasEnv({ platform: "darwin", arch: "arm64", env: {}, exists: yes, cores: 8 })).toEqual({});
    expect(blasEnv({ platform: "linux", arch: "x64", env: {}, exists: yes, cores: undefined })).toEqual({ LD_PRELOAD: lib });
  });

  test("physical cores come from sysfs topology (hyperthreads counted once)", () => {
    const sys = join(work, "cpu");
    const cpu = (n: number, core: number) => {
      mkdirSync(join(sys, `cpu${n}`, "topology"), { recursive: true });
      writeFileSync(join(sys, `cpu${n}`, "topology", "physical_package_id"), "0\n");
      writeFileSync(join(sys, `cpu${n}`, "topology", "core_id"), `${core}\n`);
    };
    [0, 1, 2, 3].forEach((n) => cpu(n, n % 2));
    mkdirSync(join(sys, "cpufreq"));
    expect(physicalCores(sys)).toBe(2);
    expect(physicalCores(join(work, "nope"))).toBeUndefined();
  });
});
