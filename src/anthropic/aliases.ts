/**
 * Model aliases: clients ask for claude-* (or anything); the alias map picks the served
 * model. Responses echo the requested name, so clients never notice.
 */

import { isGlob, patternEntries, patternMatches } from "../engine/patterns";

/** One rule: `pattern` as src/engine/patterns.ts reads it (a bare name matches names containing it). */
export interface AliasRule {
  pattern: string;
  /** The served model's id; "default" (or empty) means whatever model the engine serves. */
  target: string;
}

/** The id under which the served model is also listed, so Claude-only model pickers find it. */
export const CLAUDE_MODEL_ID = "claude-pensieve-local";

/** Target keyword meaning "the engine's served model". */
export const DEFAULT_TARGET = "default";

/**
 * Parses "claude-*haiku*=small-model,*=default" into rules (order kept).
 * Throws on an entry without `=` or with an empty pattern, so a typo fails at startup.
 */
export function parseAliases(spec: string): AliasRule[] {
  const entries = patternEntries(spec, "last", (entry) => new Error(`invalid alias entry "${entry}": expected PATTERN=TARGET`));
  return entries.map(({ pattern, value }) => ({ pattern, target: value || DEFAULT_TARGET }));
}

/**
 * Resolves a requested model name to the served target. Bare names win over globs, each
 * kind tried in order; anything unmatched maps to the served model.
 */
export function resolveModel(requested: string, rules: readonly AliasRule[], served: string): string {
  const pick = (target: string) => (target === DEFAULT_TARGET || target === "" ? served : target);
  for (const r of rules) if (!isGlob(r.pattern) && patternMatches(r.pattern, requested)) return pick(r.target);
  for (const r of rules) if (isGlob(r.pattern) && patternMatches(r.pattern, requested)) return pick(r.target);
  return served;
}

/** Names worth listing in /v1/models: the served id, the claude id, and bare (non-glob) aliases. */
export function listedModelIds(rules: readonly AliasRule[], served: string): string[] {
  const ids = [served, CLAUDE_MODEL_ID];
  for (const r of rules) if (!isGlob(r.pattern)) ids.push(r.pattern);
  return [...new Set(ids)];
}
