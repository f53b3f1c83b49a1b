import { describe, expect, test } from "bun:test";
import { NotFoundError, ParseError } from "elysia";
import {
  AuthenticationError,
  InvalidRequestError,
  mapError,
  newRequestId,
  NotFoundApiError,
  OverloadedError,
  PermissionError,
  RequestTooLargeError,
} from "../../../src/anthropic/errors";
import { lowMemoryError } from "../../../src/http/memory-guard";
import {
  EngineBadRequestError,
  EngineOverloadedError,
  EngineTimeoutError,
  PromptTooLongError,
  WorkerCrashedError,
} from "../../../src/engine/errors";
import { httpDefaults } from "../../../src/config";

describe("error mapping", () => {
  const cases: Array<[string, unknown, number, string]> = [
    ["InvalidRequestError", new InvalidRequestError("bad"), 400, "invalid_request_error"],
    ["AuthenticationError", new AuthenticationError(), 401, "authentication_error"],
    ["PermissionError", new PermissionError("no"), 403, "permission_error"],
    ["NotFoundApiError", new NotFoundApiError(), 404, "not_found_error"],
    ["elysia NotFoundError", new NotFoundError(), 404, "not_found_error"],
    ["RequestTooLargeError", new RequestTooLargeError(10), 413, "request_too_large"],
    ["elysia ParseError", new ParseError(), 400, "invalid_request_error"],
    ["ParseError wrapping a 413", new ParseError(new RequestTooLargeError(5)), 413, "request_too_large"],
    ["EngineBadRequestError", new EngineBadRequestError("images"), 400, "invalid_request_error"],
    ["WorkerCrashedError", new WorkerCrashedError("died", ["line1"]), 500, "api_error"],
    ["EngineTimeoutError", new EngineTimeoutError("slow"), 504, "timeout_error"],
    ["plain Error", new Error("what"), 500, "api_error"],
    ["a thrown string", "a string", 500, "api_error"],
  ];
  for (const [name, err, status, type] of cases) {
    test(`${name} -> ${status} ${type}`, () => {
      const m = mapError(err, "req_x");
      expect(m.status).toBe(status);
      expect(m.body).toEqual({ type: "error", error: { type: type as never, message: expect.any(String) }, request_id: "req_x" });
    });
  }

  test("prompt too long: Anthropic's exact wording", () => {
    const m = mapError(new PromptTooLongError(205000, 200000), "req_1");
    expect(m.status).toBe(400);
    expect(m.body.error).toEqual({ type: "invalid_request_error", message: "prompt is too long: 205000 tokens > 200000 maximum" });
  });

  test("overloaded: 529, retry-after capped at 60, x-should-retry", () => {
    const m = mapError(new EngineOverloadedError("queue full", 300), null);
    expect(m.status).toBe(529);
    expect(m.body.error.type).toBe("overloaded_error");
    expect(m.headers).toEqual({ "retry-after": "60", "x-should-retry": "true" });
    expect(mapError(new OverloadedError("busy", 3), null).headers["retry-after"]).toBe("3");
  });

  test("memory 503: overloaded_error naming memory and GB, with retry headers", () => {
    const m = mapError(lowMemoryError(0.75, 1, httpDefaults.memoryRetryAfterSeconds), "req_m");
    expect(m.status).toBe(503);
    expect(m.body.error.type).toBe("overloaded_error");
    expect(m.body.error.message).toContain("0.75 GB");
    expect(m.body.error.message.toLowerCase()).toContain("memory");
    expect(m.headers["x-should-retry"]).toBe("true");
    expect(Number(m.headers["retry-after"])).toBeLessThanOrEqual(60);
  });

  test("worker crash does not quote the stderr tail", () => {
    expect(mapError(new WorkerCrashedError("worker exited", ["Traceback", "OOM"]), null).body.error.message).toBe("worker exited");
  });

  test("the mapped parts carry the status, retry headers and the request id in the body", () => {
    const m = mapError(new OverloadedError("busy", 2), "req_r");
    expect(m.status).toBe(529);
    expect(m.headers).toEqual({ "retry-after": "2", "x-should-retry": "true" });
    expect(m.body).toEqual({ type: "error", error: { type: "overloaded_error", message: "busy" }, request_id: "req_r" });
  });

  test("request ids look like Anthropic's", () => {
    const a = newRequestId();
    expect(a).toMatch(/^req_[0-9A-Za-z]{24}$/);
    expect(newRequestId()).not.toBe(a);
  });
});
