/**
 * Model routing rules: which upstream (URL and model id) serves which requested model.
 *
 * Spec string (flag `--upstream-routes`, env PENSIEVE_UPSTREAM_ROUTES), comma-separated rules:
 *
 *     PATTERN=[URL][#MODEL]
 *
 *   haiku=http://gpu2:8001/v1#Qwen/Qwen3-4B,*=http://gpu1:8000/v1#Qwen/Qwen3-235B-A22B
 *   haiku=#small-model                       (same upstream as --upstream, another model id)
 *   sonnet=http://gpu3:8000                  (model id discovered from that server's /v1/models)
 *
 * PATTERN is matched case-insensitively against the model the request resolved to (the alias
 * target; the Claude model name when the alias map leaves it alone), as src/engine/patterns.ts
 * says: without `*` or `?` it matches any name that contains it ("haiku" matches
 * "claude-haiku-4-5"); with them it is a glob over the whole name ("claude-opus-4-*"). Rules are
 * tried in the order written; the catch-all `*` is tried last whatever its position. A URL may
 * end in `/v1` or not.
 */

import { patternEntries, patternMatches } from "../engine/patterns";

/** One parsed rule. */
export interface RouteRule {
  pattern: string;
  /** Upstream URL; undefined = the default upstream. */
  baseUrl?: string;
  /** Upstream model id; undefined = the model that upstream serves (discovered). */
  model?: string;
}

/** Parse a routes spec; throws with a readable message on a malformed rule. */
export function parseRouteSpec(spec: string): RouteRule[] {
  const rules: RouteRule[] = [];
  const entries = patternEntries(spec, "first", (part) => new Error(`bad upstream route "${part}": expected PATTERN=URL#MODEL`));
  for (const { entry: part, pattern, value: target } of entries) {
    const hash = target.indexOf("#");
    const url = (hash < 0 ? target : target.slice(0, hash)).trim();
    const model = hash < 0 ? "" : target.slice(hash + 1).trim();
    if (!url && !model) throw new Error(`bad upstream route "${part}": give a URL, a #MODEL, or both`);
    if (url) {
      let u: URL;
      try {
        u = new URL(url);
      } catch {
        throw new Error(`bad upstream route "${part}": "${url}" is not a URL`);
      }
      if (u.protocol !== "http:" && u.protocol !== "https:") {
        throw new Error(`bad upstream route "${part}": only http and https upstreams are supported`);
      }
    }
    if (rules.some((r) => r.pattern.toLowerCase() === pattern.toLowerCase())) {
      throw new Error(`bad upstream routes: pattern "${pattern}" appears twice`);
    }
    rules.push({ pattern, ...(url ? { baseUrl: url } : {}), ...(model ? { model } : {}) });
  }
  return rules;
}

/** The first rule selecting `model`, the catch-all last; undefined when none does. */
export function pickRoute<T extends { pattern: string }>(rules: readonly T[], model: string | undefined): T | undefined {
  const name = model ?? "";
  const specific = rules.find((r) => r.pattern !== "*" && name !== "" && patternMatches(r.pattern, name));
  return specific ?? rules.find((r) => r.pattern === "*");
}
