import { describe, expect, test } from "bun:test";
import { Elysia } from "elysia";
import { parseHost } from "../../../src/http/host";
import { isOpenPath, parseTarget, requestTarget } from "../../../src/http/paths";

describe("parseHost: a name or IP, then an optional numeric port", () => {
  test("valid forms", () => {
    expect(parseHost("localhost")).toEqual({ hostname: "localhost", port: null });
    expect(parseHost("LocalHost:7777")).toEqual({ hostname: "localhost", port: 7777 });
    expect(parseHost("127.0.0.1:0")).toEqual({ hostname: "127.0.0.1", port: 0 });
    expect(parseHost("[::1]")).toEqual({ hostname: "[::1]", port: null });
    expect(parseHost("[::1]:65535")).toEqual({ hostname: "[::1]", port: 65535 });
    expect(parseHost("my-mac.local")).toEqual({ hostname: "my-mac.local", port: null });
    expect(parseHost("pensieve_1:80")).toEqual({ hostname: "pensieve_1", port: 80 });
    // The FQDN form is a valid name, and a different one from "localhost" (so 403, not 400).
    expect(parseHost("localhost.:7")).toEqual({ hostname: "localhost.", port: 7 });
  });

  test("malformed forms are refused", () => {
    for (const bad of [
      "",
      "[::1]evil.example",
      "[::1]:evil",
      "[::1",
      "[evil.example]",
      "::1",
      "localhost:evil.example",
      "localhost:",
      "localhost:99999",
      "localhost:80:80",
      "localhost/swagger",
      "a@localhost",
      "localhost, evil.example",
      "local host",
      "-bad.example",
      "bad-.example",
      "a..b",
      "localhost..",
      ".",
      `${"a".repeat(64)}.example`,
    ])
      expect([bad, parseHost(bad)]).toEqual([bad, null]);
  });
});

describe("parseTarget: the path a strict parse finds must be the router's", () => {
  test("an ordinary request", () => {
    expect(parseTarget("http://localhost:7777/v1/messages?beta=true", null, "/v1/messages")).toEqual({
      path: "/v1/messages",
      host: "localhost:7777",
    });
    expect(parseTarget("http://localhost/v1/messages", "[::1]:7", "/v1/messages")).toEqual({ path: "/v1/messages", host: "[::1]:7" });
  });

  test("a relative URL (Bun had no usable Host) keeps the header, or none", () => {
    expect(parseTarget("/health", null, "/health")).toEqual({ path: "/health", host: null });
    expect(parseTarget("/v1/messages", "local host", "/v1/messages")).toEqual({ path: "/v1/messages", host: "local host" });
  });

  test("any disagreement with the router is a 400", () => {
    const cases: Array<[string, unknown]> = [
      ["/x[::1]/swagger/v1/messages", "/v1/messages"],
      ["/x[::1]/swagger/v1/messages", "/swagger/v1/messages"],
      ["http://localhost/v1/messages#frag", "/v1/messages#frag"],
      ["http://ab/health", "http://ab/health"],
      ["http://user:pw@localhost/v1/messages", "/v1/messages"],
      ["ftp://localhost/v1/messages", "/v1/messages"],
      ["http://localhost/v1/messages", undefined],
      ["not a url", "/"],
    ];
    for (const [url, routerPath] of cases) {
      let status = 0;
      try {
        parseTarget(url, null, routerPath);
      } catch (e) {
        status = (e as { status: number }).status;
      }
      expect([url, status]).toEqual([url, 400]);
    }
  });

  test("open paths are exact", () => {
    for (const p of ["/health", "/api/hello", "/swagger", "/swagger/json", "/swagger.json"]) expect(isOpenPath(p)).toBe(true);
    for (const p of ["/health/", "/Health", "/v1/messages", "/x/swagger", "/healthz", "//health"]) expect(isOpenPath(p)).toBe(false);
  });
});

describe("requestTarget reads the path Elysia's router matches", () => {
  test("ctx.path in onRequest is the routed path, and the target agrees with it", async () => {
    const seen: string[] = [];
    const app = new Elysia({ handler: { standardHostname: false } })
      .onRequest((ctx) => {
        seen.push(requestTarget(ctx).path);
      })
      .get("/health", () => "health")
      .get("/v1/models", () => "models");
    for (const url of ["http://localhost/health", "http://ab/v1/models?x=/health", "http://[::1]:7/health"])
      expect(await (await app.handle(new Request(url))).text()).not.toBe("NOT_FOUND");
    expect(seen).toEqual(["/health", "/v1/models", "/health"]);
  });
});
