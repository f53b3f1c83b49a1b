import { resolve } from "node:path";

/** Source-tree root when running from source; undefined inside the compiled binary. */
export function sourceRoot(): string | undefined {
  // In a `bun build --compile` binary, import.meta.dir points into the virtual /$bunfs tree.
  const dir = import.meta.dir;
  if (dir.startsWith("/$bunfs") || dir.includes("~BUN")) return undefined;
  return resolve(dir, "..", "..");
}
