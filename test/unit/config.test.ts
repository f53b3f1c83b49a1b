import { describe, expect, test } from "bun:test";
import { homedir } from "node:os";
import { join } from "node:path";
import { checkBinding, DEFAULT_MODEL, DEFAULT_TOKEN, defaultEngine, isLoopbackHost, parseServeArgs, serveHelp, UsageError } from "../../src/config";

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

describe("the shutdown drain option", () => {
  test("--shutdown-drain-ms / PENSIEVE_SHUTDOWN_DRAIN_MS, default 30 s, apart from the emergency --drain-timeout-ms", () => {
    const cfg = parseServeArgs([], {});
    expect(cfg.shutdownDrainMs).toBe(30_000);
    expect(cfg.drainTimeoutMs).toBe(5000);
    expect(parseServeArgs(["--shutdown-drain-ms", "300"], {}).shutdownDrainMs).toBe(300);
    expect(parseServeArgs([], { PENSIEVE_SHUTDOWN_DRAIN_MS: "1500" }).shutdownDrainMs).toBe(1500);
    expect(() => parseServeArgs(["--shutdown-drain-ms", "-1"], {})).toThrow(UsageError);
    const help = serveHelp();
    expect(help).toContain("--shutdown-drain-ms");
    expect(help).toContain("PENSIEVE_SHUTDOWN_DRAIN_MS");
    expect(help).toMatch(/--drain-timeout-ms.*EMERGENCY/);
  });
});

describe("binding beyond loopback", () => {
  test.each(["127.0.0.1", "127.8.9.10", "localhost", "LocalHost", "::1", "[::1]", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"])("%s is loopback", (h) => {
    expect(isLoopbackHost(h)).toBe(true);
  });

  test.each(["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "128.0.0.1", "127.0.0.256", "::2", "fe80::1", "my-host.lan", "example.com"])(
    "%s is not",
    (h) => {
      expect(isLoopbackHost(h)).toBe(false);
    },
  );

  test("loopback: no warning, whatever the token", () => {
    expect(checkBinding({ host: "127.0.0.1", token: DEFAULT_TOKEN })).toBeNull();
    expect(checkBinding({ host: "localhost", token: "s3cret-x" })).toBeNull();
  });

  test("beyond loopback with the default (or an empty) token is refused, naming --token and PENSIEVE_TOKEN", () => {
    for (const token of [DEFAULT_TOKEN, "", "  "]) {
      const err = (() => {
        try {
          checkBinding({ host: "0.0.0.0", token });
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toContain("0.0.0.0");
      expect((err as Error).message).toContain("--token");
      expect((err as Error).message).toContain("PENSIEVE_TOKEN");
    }
  });

  test("beyond loopback with a token of one's own: a warning naming the address", () => {
    const warning = checkBinding({ host: "192.168.1.20", token: "a-long-secret" });
    expect(warning).toContain("192.168.1.20");
    expect(warning).toContain("beyond loopback");
  });

  test("the default config binds loopback, so it passes", () => {
    expect(checkBinding(parseServeArgs([], {}))).toBeNull();
    expect(() => checkBinding(parseServeArgs(["--host", "0.0.0.0"], {}))).toThrow(UsageError);
    expect(() => checkBinding(parseServeArgs([], { PENSIEVE_HOST: "0.0.0.0" }))).toThrow(UsageError);
    expect(checkBinding(parseServeArgs(["--host", "0.0.0.0"], { PENSIEVE_TOKEN: "mine-123" }))).toContain("0.0.0.0");
  });
});

describe("--engine", () => {
  test("defaults to mlx on Apple Silicon and llama elsewhere", () => {
    expect(defaultEngine("darwin", "arm64")).toBe("mlx");
    expect(defaultEngine("darwin", "x64")).toBe("llama");
    expect(defaultEngine("linux", "x64")).toBe("llama");
    expect(defaultEngine("linux", "arm64")).toBe("llama");
    const cfg = parseServeArgs([], {});
    expect(cfg.engine).toBe(defaultEngine());
    expect(cfg.explicit.has("engine")).toBe(false);
  });

  test("flag and PENSIEVE_ENGINE choose it, and mark it explicit", () => {
    expect(parseServeArgs(["--engine", "llama"], {}).engine).toBe("llama");
    const fromEnv = parseServeArgs([], { PENSIEVE_ENGINE: "mlx" });
    expect(fromEnv.engine).toBe("mlx");
    expect(fromEnv.explicit.has("engine")).toBe(true);
    expect(parseServeArgs(["--engine=mlx"], { PENSIEVE_ENGINE: "llama" }).engine).toBe("mlx");
  });

  test("anything else is a usage error", () => {
    expect(() => parseServeArgs(["--engine", "vllm"], {})).toThrow(/--engine must be 'mlx' or 'llama'/);
  });

  test("the model defaults to the built-in Qwen2.5-Coder 0.5B, not given explicitly", () => {
    const cfg = parseServeArgs([], {});
    expect(cfg.model).toBe(DEFAULT_MODEL);
    expect(DEFAULT_MODEL).toBe("qwen2.5-coder-0.5b-instruct");
    expect(cfg.explicit.has("model")).toBe(false);
    expect(parseServeArgs(["--model", "demo-tiny"], {}).explicit.has("model")).toBe(true);
  });
});
