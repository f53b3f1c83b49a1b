import { describe, expect, test } from "bun:test";
import { promptTooLongMessage } from "../../../src/anthropic/errors";
import { EngineBadRequestError, EngineError, EngineOverloadedError, PromptTooLongError } from "../../../src/engine/errors";
import {
  UpstreamServerError,
  UpstreamUnavailableError,
  mapUpstreamStatus,
  parseContextComplaint,
  parseRetryAfter,
  upstreamErrorMessage,
} from "../../../src/upstream/errors";
import { upstreamDefaults } from "../../../src/config";

const UP = "http://gpu:8000";
// The retry-after used when an upstream sends none.
const RETRY_S = upstreamDefaults.retryAfterSeconds;
const map = (status: number, body: string, headers: Record<string, string> = {}) =>
  mapUpstreamStatus(status, new Headers(headers), body, UP, RETRY_S);

describe("retry-after", () => {
  test("seconds, HTTP dates, caps and defaults", () => {
    expect(parseRetryAfter("7", RETRY_S)).toBe(7);
    expect(parseRetryAfter("0", RETRY_S)).toBe(1);
    expect(parseRetryAfter("3600", RETRY_S)).toBe(60);
    expect(parseRetryAfter(null, RETRY_S)).toBe(5);
    expect(parseRetryAfter("soon", RETRY_S)).toBe(5);
    const now = Date.parse("2025-01-01T00:00:00Z");
    expect(parseRetryAfter("Wed, 01 Jan 2025 00:00:20 GMT", RETRY_S, now)).toBe(20);
  });
});

describe("upstream error bodies", () => {
  test("every server's shape yields its message", () => {
    expect(upstreamErrorMessage('{"error":{"message":"bad tool","type":"invalid_request_error"}}')).toBe("bad tool");
    expect(upstreamErrorMessage('{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","code":404}')).toBe(
      "The model `x` does not exist.",
    );
    expect(upstreamErrorMessage('{"error": "max_tokens must be at least 1"}')).toBe("max_tokens must be at least 1");
    expect(upstreamErrorMessage('{"detail":"Not Found"}')).toBe("Not Found");
    expect(upstreamErrorMessage("Bad Gateway")).toBe("Bad Gateway");
    expect(upstreamErrorMessage("")).toBe("(empty body)");
  });

  test("context-length complaints: vLLM, vLLM v1, SGLang, llama-server", () => {
    const vllm = JSON.stringify({
      object: "error",
      message:
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4500 in the messages, 500 in the completion). Please reduce the length of the messages or completion.",
      code: 400,
    });
    expect(parseContextComplaint(vllm)).toEqual({ isContextError: true, maxContext: 4096, promptTokens: 4500 });
    const vllmNew = JSON.stringify({
      error: {
        message:
          "'max_tokens' or 'max_completion_tokens' is too large: 2000. This model's maximum context length is 4096 tokens and your request has 3000 input tokens (2000 > 4096 - 3000).",
      },
    });
    expect(parseContextComplaint(vllmNew)).toEqual({ isContextError: true, maxContext: 4096, promptTokens: 3000 });
    const v1 = '{"object":"error","message":"The decoder prompt (length 9000) is longer than the maximum model length of 8192. Make sure that `max_model_len` is no smaller than the number of text tokens.","code":400}';
    expect(parseContextComplaint(v1)).toEqual({ isContextError: true, maxContext: 8192, promptTokens: 9000 });
    const sglang = '{"object":"error","message":"Input length (40000 tokens) exceeds the maximum allowed length (32768 tokens). Use a shorter input or enable --allow-auto-truncate.","code":400}';
    expect(parseContextComplaint(sglang)).toEqual({ isContextError: true, maxContext: 32768, promptTokens: 40000 });
    const llama = '{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}';
    expect(parseContextComplaint(llama)).toEqual({ isContextError: true, maxContext: 4096, promptTokens: 5000 });
    expect(parseContextComplaint('{"error":"bad tool schema"}').isContextError).toBe(false);
  });
});

describe("status mapping", () => {
  test("429 and 503 are overload with the upstream's retry-after, capped at 60", () => {
    const e = map(429, '{"error":{"message":"Too many requests"}}', { "retry-after": "12" });
    expect(e).toBeInstanceOf(EngineOverloadedError);
    expect((e as EngineOverloadedError).retryAfterSeconds).toBe(12);
    expect((map(503, "Service Unavailable", { "retry-after": "999" }) as EngineOverloadedError).retryAfterSeconds).toBe(60);
    expect((map(503, "") as EngineOverloadedError).retryAfterSeconds).toBe(5);
  });

  test("prompt too long with numbers -> PromptTooLongError, worded as Anthropic's by the API layer", () => {
    const e = map(400, '{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}');
    expect(e).toBeInstanceOf(PromptTooLongError);
    expect([(e as PromptTooLongError).promptTokens, (e as PromptTooLongError).maxTokens]).toEqual([5000, 4096]);
    expect(promptTooLongMessage(e as PromptTooLongError)).toBe("prompt is too long: 5000 tokens > 4096 maximum");
  });

  test("a context complaint without a prompt count is still PromptTooLongError, worded 'prompt is too long'", () => {
    const e = map(400, '{"message":"This model\'s maximum context length is 2048 tokens. Please reduce the length of the messages."}');
    expect(e).toBeInstanceOf(PromptTooLongError);
    const p = e as PromptTooLongError;
    expect([p.promptTokens, p.maxTokens]).toEqual([undefined, 2048]);
    expect(p.detail).toContain("maximum context length is 2048");
    expect(promptTooLongMessage(p)).toStartWith("prompt is too long: upstream says: ");
  });

  test("other 4xx -> bad request with the upstream's message", () => {
    const e = map(400, '{"object":"error","message":"tool_choice must be one of ...","code":400}');
    expect(e).toBeInstanceOf(EngineBadRequestError);
    expect(e.message).toContain("tool_choice must be one of");
    expect(map(404, '{"object":"error","message":"The model `x` does not exist."}')).toBeInstanceOf(EngineBadRequestError);
  });

  test("401/403 are the operator's problem: unavailable, never the client's auth error", () => {
    const e = map(401, '{"error":"invalid api key"}');
    expect(e).toBeInstanceOf(UpstreamUnavailableError);
    expect((e as UpstreamUnavailableError).failure).toBe("auth");
    expect(e.message).toContain("--upstream-key");
  });

  test("502/504 are unavailable; 500 is a server error; all are EngineErrors", () => {
    expect(map(502, "Bad Gateway")).toBeInstanceOf(UpstreamUnavailableError);
    expect(map(504, "Gateway Timeout")).toBeInstanceOf(UpstreamUnavailableError);
    const e = map(500, '{"object":"error","message":"boom"}');
    expect(e).toBeInstanceOf(UpstreamServerError);
    expect(e).toBeInstanceOf(EngineError);
    expect(e.name).toBe("UpstreamServerError");
  });
});
