import { describe, expect, test } from "bun:test";
import { parseAliases, resolveModel } from "../../../src/anthropic/aliases";
import { isGlob, patternMatches } from "../../../src/engine/patterns";
import { parseRouteSpec, pickRoute } from "../../../src/upstream/routes";

// The one meaning of a model pattern, for --aliases and --upstream-routes alike (README "Several models").
describe("model patterns", () => {
  test("a bare name matches any name containing it, ignoring case", () => {
    expect(patternMatches("haiku", "claude-3-5-HAIKU-20241022")).toBe(true);
    expect(patternMatches("HAIKU", "claude-haiku-4-5")).toBe(true);
    expect(patternMatches("claude-x", "claude-x")).toBe(true);
    expect(patternMatches("sonnet", "claude-haiku-4-5")).toBe(false);
  });

  test("`*` and `?` make a glob over the whole name; regex characters are literal", () => {
    expect(patternMatches("claude-opus-4-*", "claude-opus-4-1-20250805")).toBe(true);
    expect(patternMatches("claude-opus-4-*", "my-claude-opus-4-1")).toBe(false);
    expect(patternMatches("m?del", "MODEL")).toBe(true);
    expect(patternMatches("m?del", "models")).toBe(false);
    expect(patternMatches("a.b", "axb")).toBe(false);
    expect(patternMatches("a.b*", "a.bc")).toBe(true);
    expect(patternMatches("*", "")).toBe(true);
    expect(isGlob("haiku")).toBe(false);
    expect(isGlob("*haiku*")).toBe(true);
    expect(isGlob("h?iku")).toBe(true);
  });

  test("aliases and routes read the same pattern the same way", () => {
    const names = ["claude-haiku-4-5", "claude-3-5-haiku-latest", "claude-sonnet-4-5", "haiku", "gpt-4o"];
    for (const pattern of ["haiku", "*haiku*", "claude-*-4-5", "claude-?-5-haiku-latest"]) {
      const aliases = parseAliases(`${pattern}=small`);
      const routes = parseRouteSpec(`${pattern}=#small`);
      for (const name of names) {
        const viaAlias = resolveModel(name, aliases, "served") === "small";
        const viaRoute = pickRoute(routes, name) !== undefined;
        expect([pattern, name, viaAlias]).toEqual([pattern, name, viaRoute]);
      }
    }
  });
});
