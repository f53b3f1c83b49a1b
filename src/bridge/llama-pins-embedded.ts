/**
 * The llama.cpp pins a compiled binary carries: scripts/build.ts replaces this module with
 * the values read from package.json and bun.lock. From source it is null and they are read
 * from those files when first needed (a macro here cost every start ~6 MiB of RSS).
 */
import type { LlamaPins } from "./llama-pins";

export const EMBEDDED_LLAMA_PINS: LlamaPins | null = null;
