/**
 * Model-name patterns, one meaning for `--aliases` and `--upstream-routes` (README "Several
 * models"): matched ignoring case; a pattern with `*` (any run) or `?` (one character) is a glob
 * over the whole name; one without either matches any name that contains it ("haiku" matches
 * "claude-haiku-4-5"); `*` alone matches everything.
 */

/** One `PATTERN=VALUE` entry of a comma-separated rule list, both sides trimmed. */
export interface PatternEntry {
  /** The whole entry, for error messages. */
  entry: string;
  pattern: string;
  value: string;
}

/**
 * Splits "a=x, b=y" into entries (blank ones skipped) at each entry's first `=`, or its last
 * with `at: "last"`. An entry without a pattern before the `=` throws `invalid(entry)`.
 */
export function patternEntries(spec: string, at: "first" | "last", invalid: (entry: string) => Error): PatternEntry[] {
  const out: PatternEntry[] = [];
  for (const raw of spec.split(",")) {
    const entry = raw.trim();
    if (!entry) continue;
    const eq = at === "first" ? entry.indexOf("=") : entry.lastIndexOf("=");
    // The entry is trimmed, so a pattern before the `=` is never blank.
    if (eq <= 0) throw invalid(entry);
    out.push({ entry, pattern: entry.slice(0, eq).trim(), value: entry.slice(eq + 1).trim() });
  }
  return out;
}

/** True when `pattern` is a glob (has `*` or `?`) rather than a bare name. */
export function isGlob(pattern: string): boolean {
  return pattern.includes("*") || pattern.includes("?");
}

// Compiled globs by lower-cased pattern; patterns come from the command line, so few.
const globs = new Map<string, RegExp>();

function globRegExp(lower: string): RegExp {
  let re = globs.get(lower);
  if (!re) {
    const body = lower.replace(/[.+^${}()|[\]\\]/g, "\\$&").replaceAll("*", ".*").replaceAll("?", ".");
    globs.set(lower, (re = new RegExp(`^${body}$`, "s")));
  }
  return re;
}

/** Does `pattern` select the model `name`? (see the module comment) */
export function patternMatches(pattern: string, name: string): boolean {
  const p = pattern.toLowerCase();
  const n = name.toLowerCase();
  if (p === "*") return true;
  return isGlob(p) ? globRegExp(p).test(n) : n.includes(p);
}
