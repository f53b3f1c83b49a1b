import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

/** Where `pensieve setup` puts the bridge's virtual environment. */
export function setupVenvDir(home: string): string {
  return join(home, "venv");
}

function venvPython(venv: string): string {
  // Windows venvs keep the interpreter elsewhere; Pensieve targets macOS and Linux.
  return join(venv, "bin", "python");
}

/** Source-tree root when running from source; undefined inside the compiled binary. */
export function sourceRoot(): string | undefined {
  // In a `bun build --compile` binary, import.meta.dir points into the virtual /$bunfs tree.
  const dir = import.meta.dir;
  if (dir.startsWith("/$bunfs") || dir.includes("~BUN")) return undefined;
  return resolve(dir, "..", "..");
}

/**
 * Pick the interpreter that runs the bridge: --python, then `pensieve setup`'s venv,
 * then a repository `.venv` (the source tree's, then the working directory's).
 */
export function resolvePython(explicit: string | undefined, home: string): { python: string | undefined; tried: string[] } {
  if (explicit) return { python: explicit, tried: [explicit] };
  const candidates = [venvPython(setupVenvDir(home))];
  const root = sourceRoot();
  if (root) candidates.push(venvPython(join(root, ".venv")));
  candidates.push(venvPython(join(process.cwd(), ".venv")));
  for (const c of candidates) if (existsSync(c)) return { python: c, tried: candidates };
  return { python: undefined, tried: candidates };
}
