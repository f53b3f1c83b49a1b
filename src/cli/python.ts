import { existsSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { sourceRoot } from "../assets/source-root";

/** Where `pensieve setup` puts the bridge's virtual environment. */
export function setupVenvDir(home: string): string {
  return join(home, "venv");
}

function venvPython(venv: string): string {
  // Windows venvs keep the interpreter elsewhere; Pensieve targets macOS and Linux.
  return join(venv, "bin", "python");
}

/**
 * Pick the interpreter that runs the bridge: --python, then `pensieve setup`'s venv,
 * then a repository `.venv` (the source tree's, then the working directory's).
 */
export function resolvePython(explicit: string | undefined, home: string): { python: string | undefined; tried: string[] } {
  if (explicit) {
    // A relative path is the user's, from their directory: the bridge runs from another one.
    const python = explicit.includes("/") && !isAbsolute(explicit) ? resolve(explicit) : explicit;
    return { python, tried: [python] };
  }
  const candidates = [venvPython(setupVenvDir(home))];
  const root = sourceRoot();
  if (root) candidates.push(venvPython(join(root, ".venv")));
  candidates.push(venvPython(join(process.cwd(), ".venv")));
  for (const c of candidates) if (existsSync(c)) return { python: c, tried: candidates };
  return { python: undefined, tried: candidates };
}
