/**
 * Model-name patterns, one meaning for `--aliases` and `--upstream-routes` (README "Several
 * models"): matched ignoring case; a pattern with `*` (any run) or `?` (one character) is a glob
 * over the whole name; one without either matches any name that contains it ("haiku" matches
 * "claude-haiku-4-5"); `*` alone matches everything.
 */

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
