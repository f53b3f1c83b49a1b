import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { resolvePython } from "../../../src/cli/python";

describe("resolvePython", () => {
  test("a relative --python is taken from the user's directory (the bridge runs from another)", () => {
    const found = resolvePython(".venv/bin/python", "/nonexistent-home");
    expect(found.python).toBe(join(process.cwd(), ".venv/bin/python"));
  });

  test("an absolute path and a bare command name are kept as given", () => {
    expect(resolvePython("/opt/py/bin/python3", "/h").python).toBe("/opt/py/bin/python3");
    expect(resolvePython("python3", "/h").python).toBe("python3");
  });
});
