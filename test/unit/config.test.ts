import { describe, expect, test } from "bun:test";
import { homedir } from "node:os";
import { join } from "node:path";
import { parseServeArgs, UsageError } from "../../src/config";

describe("parseServeArgs", () => {
  test("defaults come from the table, not from the process environment", () => {
    const cfg = parseServeArgs([], {});
    expect(cfg.home).toBe(join(homedir(), ".pensieve"));
    expect(cfg.logDir).toBe(join(homedir(), ".pensieve", "logs"));
    expect([cfg.host, cfg.port, cfg.backend]).toEqual(["127.0.0.1", 7777, "mlx"]);
  });

  test("the log dir follows --home or PENSIEVE_HOME unless given itself", () => {
    expect(parseServeArgs([], { PENSIEVE_HOME: "/h" }).logDir).toBe(join("/h", "logs"));
    expect(parseServeArgs(["--home", "/a"], { PENSIEVE_HOME: "/h" }).logDir).toBe(join("/a", "logs"));
    expect(parseServeArgs(["--home", "/a", "--log-dir=/l"], {}).logDir).toBe("/l");
    expect(parseServeArgs(["--home", "/a"], { PENSIEVE_LOG_DIR: "/e" }).logDir).toBe("/e");
  });

  test("flags win over variables", () => {
    expect(parseServeArgs(["--port", "9000"], { PENSIEVE_PORT: "8000" }).port).toBe(9000);
    expect(parseServeArgs([], { PENSIEVE_PORT: "8000" }).port).toBe(8000);
  });

  test("--backend openai takes --upstream, or routes alone", () => {
    expect(() => parseServeArgs(["--backend", "openai"], {})).toThrow(UsageError);
    expect(parseServeArgs(["--backend", "openai", "--upstream", "http://h:8000/v1"], {}).upstream).toBe("http://h:8000/v1");
    const routesOnly = parseServeArgs(["--backend", "openai", "--upstream-routes", "small=http://a:1/v1,*=http://b:2/v1"], {});
    expect(routesOnly.upstream).toBeUndefined();
    expect(routesOnly.upstreamRoutes).toBe("small=http://a:1/v1,*=http://b:2/v1");
  });

  test("bad values are usage errors", () => {
    expect(() => parseServeArgs(["--port", "x"], {})).toThrow(UsageError);
    expect(() => parseServeArgs(["--mem-warning-gb", "5"], {})).toThrow("memory thresholds must decrease");
    expect(() => parseServeArgs(["--nope"], {})).toThrow("unknown option '--nope'");
  });
});
