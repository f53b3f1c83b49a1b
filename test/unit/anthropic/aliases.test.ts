import { describe, expect, test } from "bun:test";
import { CLAUDE_MODEL_ID, listedModelIds, parseAliases, resolveModel } from "../../../src/anthropic/aliases";

describe("aliases", () => {
  test("parses a config string, keeping order", () => {
    expect(parseAliases("claude-*haiku*=small-model, *=default")).toEqual([
      { pattern: "claude-*haiku*", target: "small-model" },
      { pattern: "*", target: "default" },
    ]);
    expect(parseAliases("")).toEqual([]);
    expect(parseAliases("a=")).toEqual([{ pattern: "a", target: "default" }]);
  });

  test("rejects malformed entries", () => {
    expect(() => parseAliases("nonsense")).toThrow(/PATTERN=TARGET/);
    expect(() => parseAliases("=x")).toThrow();
  });

  test("globs, exact names first, default target, fallback to the served model", () => {
    const rules = parseAliases("*haiku*=small,claude-opus-5-5=big,claude-*=default");
    expect(resolveModel("claude-3-5-haiku-latest", rules, "served")).toBe("small");
    expect(resolveModel("CLAUDE-3-HAIKU", rules, "served")).toBe("small");
    expect(resolveModel("claude-opus-5-5", rules, "served")).toBe("big");
    expect(resolveModel("claude-sonnet-4-5", rules, "served")).toBe("served");
    expect(resolveModel("gpt-4o", rules, "served")).toBe("served");
    expect(resolveModel("anything", [], "served")).toBe("served");
  });

  test("a bare name matches names containing it, and beats an earlier glob", () => {
    const rules = parseAliases("*=default,haiku=small");
    expect(resolveModel("claude-3-5-HAIKU-latest", rules, "s")).toBe("small");
    expect(resolveModel("claude-sonnet-4-5", rules, "s")).toBe("s");
  });

  test("exact beats an earlier glob; ? matches one character; regex characters are literal", () => {
    const rules = parseAliases("*=default,claude-x=special,m?del=q,a.b=dot");
    expect(resolveModel("claude-x", rules, "s")).toBe("special");
    expect(resolveModel("model", rules, "s")).toBe("s"); // "*" wins among globs, in order
    expect(resolveModel("m1del", parseAliases("m?del=q"), "s")).toBe("q");
    expect(resolveModel("axb", parseAliases("a.b*=dot"), "s")).toBe("s");
  });

  test("listed ids: served, the claude id, exact aliases, no duplicates", () => {
    expect(listedModelIds(parseAliases("*haiku*=small,claude-opus-5-5=big,tiny=default"), "tiny")).toEqual([
      "tiny",
      CLAUDE_MODEL_ID,
      "claude-opus-5-5",
    ]);
    expect(CLAUDE_MODEL_ID).toContain("claude");
  });
});
