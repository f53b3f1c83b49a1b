/**
 * Where the llama.cpp libraries for the llama engine are: the prebuilt binaries of npm's
 * @node-llama-cpp/<platform> packages (package.json's optionalDependencies; bun installs
 * the one matching this machine). The worker reads the folder from PENSIEVE_LLAMA_LIB_DIR.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

import { sourceRoot } from "../assets/source-root";

/** The env var the worker reads the library folder from. */
export const LLAMA_LIB_DIR_ENV = "PENSIEVE_LLAMA_LIB_DIR";

/** The @node-llama-cpp package name (and bins/ folder) for a platform, or null when none is pinned. */
export function llamaPlatform(platform: string = process.platform, arch: string = process.arch): string | null {
  if (platform === "darwin" && arch === "arm64") return "mac-arm64-metal";
  if (platform === "linux" && (arch === "x64" || arch === "arm64")) return `linux-${arch}`;
  return null;
}

function hasLibllama(dir: string): boolean {
  try {
    return readdirSync(dir).some((f) => /^libllama(\.[\w.]+)?\.(so|dylib|dll)$/.test(f));
  } catch {
    return false;
  }
}

/**
 * The bins/<platform>/ folder holding libllama, from PENSIEVE_LLAMA_LIB_DIR when set, else
 * node_modules/@node-llama-cpp/<platform>/ under the source tree (then the working
 * directory); null when not installed (a compiled binary has no node_modules).
 */
export function llamaLibDir(env: Record<string, string | undefined> = process.env): string | null {
  const explicit = env[LLAMA_LIB_DIR_ENV];
  if (explicit) return hasLibllama(explicit) ? explicit : null;
  const name = llamaPlatform();
  if (name === null) return null;
  const roots = [sourceRoot(), process.cwd()].filter((r): r is string => typeof r === "string");
  for (const root of roots) {
    const dir = join(root, "node_modules", "@node-llama-cpp", name, "bins", name);
    if (existsSync(dir) && hasLibllama(dir)) return dir;
  }
  return null;
}
