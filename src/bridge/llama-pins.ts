/**
 * The pinned @node-llama-cpp/<platform> packages, read from package.json and bun.lock: from
 * source when first needed, and by scripts/build.ts, which embeds only this small object
 * (not package.json or bun.lock) in dist/pensieve (llama-pins-embedded.ts).
 */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

/** The llama.cpp package version and each platform's npm `sha512-…` integrity. */
export interface LlamaPins {
  version: string;
  integrity: Record<string, string>;
}

const SCOPE = "@node-llama-cpp/";

type LockEntry = [string, string, unknown, string];

/**
 * Reads the pins from package.json's optionalDependencies (the version) and bun.lock (the
 * integrity); throws when they disagree, so a stale lockfile fails the build.
 */
export function llamaPins(root: string = resolve(import.meta.dir, "..", "..")): LlamaPins {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { optionalDependencies?: Record<string, string> };
  const lock = Bun.JSONC.parse(readFileSync(join(root, "bun.lock"), "utf8")) as { packages?: Record<string, LockEntry> };
  const deps = Object.entries(pkg.optionalDependencies ?? {}).filter(([name]) => name.startsWith(SCOPE));
  const versions = new Set(deps.map(([, v]) => v));
  if (versions.size !== 1) throw new Error(`package.json: the ${SCOPE}* optionalDependencies must share one exact version, got ${[...versions].join(", ") || "none"}`);
  const version = [...versions][0] as string;
  const integrity: Record<string, string> = {};
  for (const [name] of deps) {
    const entry = lock.packages?.[name];
    if (!entry) throw new Error(`bun.lock has no entry for ${name}: run bun install`);
    if (entry[0] !== `${name}@${version}`) throw new Error(`bun.lock pins ${entry[0]}, package.json ${name}@${version}: run bun install`);
    if (typeof entry[3] !== "string" || !entry[3].startsWith("sha512-")) throw new Error(`bun.lock: ${name} has no sha512 integrity`);
    integrity[name.slice(SCOPE.length)] = entry[3];
  }
  return { version, integrity };
}
