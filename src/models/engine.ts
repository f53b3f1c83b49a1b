/** Which engine runs a model: the configured one, or a clear error when it cannot. */
import { type ModelEngine, UsageError } from "../config";
import { llamaLibDir } from "../bridge/llama-lib";
import { isGgufSpec, type ModelSpec } from "./spec";


export interface EngineChoice {
  engine: ModelEngine;
  /** The GGUF the llama engine runs (a directory's single .gguf, when the spec is a directory). */
  gguf?: string;
  /** A line for the log when the choice differs from what was configured. */
  note?: string;
}

function describeSpec(spec: ModelSpec): string {
  if (spec.kind === "dir") return `the MLX directory ${spec.path}`;
  if (spec.kind === "hub") return `the Hugging Face id ${spec.id}`;
  return "the demo model";
}

/**
 * Settles the engine for `spec`: `explicit` says whether --engine/PENSIEVE_ENGINE chose it.
 * Without the llama.cpp libraries (a compiled binary, an unsupported platform) a defaulted llama
 * falls back to mlx; an explicit one is passed on, so its load error is explained.
 */
export function chooseEngine(spec: ModelSpec, engine: ModelEngine, explicit: boolean, llamaReady = llamaLibDir() !== null): EngineChoice {
  if (engine === "mlx") return { engine };
  if (spec.kind === "dir" && spec.ggufs.length === 1) return { engine, gguf: spec.ggufs[0] as string };
  if (spec.kind === "dir" && spec.ggufs.length > 1 && explicit) {
    throw new UsageError(`--engine llama: ${spec.path} holds several .gguf files (${spec.ggufs.join(", ")}); pass one of them as --model`);
  }
  if (!isGgufSpec(spec) && spec.kind !== "dir") {
    if (explicit) throw new UsageError(`--engine llama runs GGUF files, and ${describeSpec(spec)} is not one: pass a .gguf file or ollama:NAME, or --engine mlx`);
    return { engine: "mlx", note: `${describeSpec(spec)} runs on the mlx engine` };
  }
  if (spec.kind === "dir") {
    if (explicit) throw new UsageError(`--engine llama runs GGUF files, and ${spec.path} holds none: pass a .gguf file or ollama:NAME, or --engine mlx`);
    return { engine: "mlx", note: `${describeSpec(spec)} runs on the mlx engine` };
  }
  if (!llamaReady && !explicit) {
    return { engine: "mlx", note: "the llama.cpp libraries (npm's @node-llama-cpp/<platform>) are not installed here: converting the GGUF for the mlx engine" };
  }
  return { engine };
}
