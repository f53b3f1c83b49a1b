/**
 * Where the llama.cpp libraries for the llama engine are: the prebuilt binaries of npm's
 * @node-llama-cpp/<platform> packages (package.json's optionalDependencies; bun installs
 * the one matching this machine, and a compiled binary fetches it into <home>/llama, see
 * llama-fetch.ts). The worker reads the folder from PENSIEVE_LLAMA_LIB_DIR.
 */
import { existsSync, readdirSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

import { sourceRoot } from "../assets/source-root";
import { type LlamaPins, llamaPins } from "./llama-pins";
import { EMBEDDED_LLAMA_PINS } from "./llama-pins-embedded";

/** The env var the worker reads the library folder from. */
export const LLAMA_LIB_DIR_ENV = "PENSIEVE_LLAMA_LIB_DIR";

let pins: LlamaPins | undefined;

/** The pinned package version and integrities: embedded in a compiled binary, else read from package.json and bun.lock. */
export function pinnedLlama(): LlamaPins {
  return (pins ??= EMBEDDED_LLAMA_PINS ?? llamaPins());
}

/** The @node-llama-cpp package name (and bins/ folder) for a platform, or null when none is pinned. */
export function llamaPlatform(platform: string = process.platform, arch: string = process.arch): string | null {
  if (platform === "darwin" && arch === "arm64") return "mac-arm64-metal";
  if (platform === "linux" && (arch === "x64" || arch === "arm64")) return `linux-${arch}`;
  return null;
}

/** Whether `dir` holds a libllama shared library. */
export function hasLibllama(dir: string): boolean {
  try {
    return readdirSync(dir).some((f) => /^libllama(\.[\w.]+)?\.(so|dylib|dll)$/.test(f));
  } catch {
    return false;
  }
}

/** The state directory when none is passed: PENSIEVE_HOME, else ~/.pensieve (as the config defaults it). */
export function defaultHome(env: Record<string, string | undefined> = process.env): string {
  return env.PENSIEVE_HOME || join(homedir(), ".pensieve");
}

/** Where a fetched copy of the package lives: <home>/llama/<platform>-<version> (its bins/<platform> is the library folder). */
export function llamaHomeRoot(home: string, platform: string, version: string = pinnedLlama().version): string {
  return join(home, "llama", `${platform}-${version}`);
}

function installRoots(): string[] {
  return [sourceRoot(), process.cwd()].filter((r): r is string => typeof r === "string");
}

/**
 * The bins/<platform>/ folder holding libllama, from PENSIEVE_LLAMA_LIB_DIR when set, else
 * node_modules/@node-llama-cpp/<platform>/ under `roots` (the source tree, then the working
 * directory), else the copy fetched into <home>/llama; null when none is there.
 */
export function llamaLibDir(
  env: Record<string, string | undefined> = process.env,
  home: string = defaultHome(env),
  roots: string[] = installRoots(),
): string | null {
  const explicit = env[LLAMA_LIB_DIR_ENV];
  if (explicit) return hasLibllama(explicit) ? explicit : null;
  const name = llamaPlatform();
  if (name === null) return null;
  const usable = (dir: string) => existsSync(dir) && hasLibllama(dir);
  const installed = roots.map((root) => join(root, "node_modules", "@node-llama-cpp", name, "bins", name)).find(usable);
  if (installed) return installed;
  const fetched = join(llamaHomeRoot(home, name), "bins", name); // reads the pins only when needed
  return usable(fetched) ? fetched : null;
}
