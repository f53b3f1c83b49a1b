import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { InvalidRequestError } from "../../../src/anthropic/errors";
import type { MessagesRequestT } from "../../../src/anthropic/schemas";
import { systemText, toGenerateRequest, toPromptInput, translateTools } from "../../../src/anthropic/translate";

const opts = { model: "served", supportsVision: false };
const req = (extra: Partial<MessagesRequestT>): MessagesRequestT => ({
  model: "claude-x",
  max_tokens: 100,
  messages: [{ role: "user", content: "hi" }],
  ...extra,
});

describe("system prompt", () => {
  test("string and blocks; blocks are joined", () => {
    expect(systemText("Be brief.")).toBe("Be brief.");
    expect(systemText([{ type: "text", text: "A" }, { type: "text", text: "B" }])).toBe("A\n\nB");
    expect(systemText(undefined)).toBeNull();
  });

  test("a first billing-header block is dropped (it changes every session)", () => {
    const sys = [
      { type: "text" as const, text: "x-anthropic-billing-header: cc_version=2.1.328.b7f; cc_entrypoint=sdk-cli;" },
      { type: "text" as const, text: "You are an agent." },
    ];
    expect(systemText(sys)).toBe("You are an agent.");
    // Only the first block, and only with the exact prefix.
    expect(systemText([sys[1]!, sys[0]!])).toContain("x-anthropic-billing-header");
    expect(systemText("x-anthropic-billing-header: a=b;\nReal prompt")).toBe("Real prompt");
  });

  test("the system prompt leads the rendered messages", () => {
    const input = toPromptInput(req({ system: "S" }), opts);
    expect(input.messages[0]).toEqual({ role: "system", content: "S" });
    expect(input.model).toBe("served");
  });
});

describe("messages", () => {
  test("text blocks joined; string content kept", () => {
    const input = toPromptInput(
      req({ messages: [{ role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b", cache_control: { type: "ephemeral" } } as never] }] }),
      opts,
    );
    expect(input.messages).toEqual([{ role: "user", content: "a\n\nb" }]);
  });

  test("role system inside messages: kept in place, except right after a user turn, where it moves before it", () => {
    const input = toPromptInput(
      req({
        system: "top",
        messages: [
          { role: "user", content: "u1" },
          { role: "system", content: [{ type: "text", text: "env info" }] },
          { role: "user", content: "u2" },
        ],
      }),
      opts,
    );
    // A small model answers a note that follows the request instead of the request itself.
    expect(input.messages.map((m) => [m.role, m.content])).toEqual([
      ["system", "top"],
      ["system", "env info"],
      ["user", "u1"],
      ["user", "u2"],
    ]);
    const afterAssistant = toPromptInput(
      req({ messages: [{ role: "user", content: "u1" }, { role: "assistant", content: "a1" }, { role: "system", content: "note" }, { role: "user", content: "u2" }] }),
      opts,
    );
    expect(afterAssistant.messages.map((m) => m.role)).toEqual(["user", "assistant", "system", "user"]);
  });

  test("consecutive user turns are combined, as Anthropic does", () => {
    const input = toPromptInput(req({ messages: [{ role: "user", content: "a" }, { role: "user", content: "b" }] }), opts);
    expect(input.messages).toEqual([{ role: "user", content: "a\n\nb" }]);
  });

  test("tool history: tool_use -> assistant tool_calls; tool_result -> tool messages", () => {
    const input = toPromptInput(
      req({
        messages: [
          { role: "user", content: "list files" },
          {
            role: "assistant",
            content: [
              { type: "thinking", thinking: "use Bash", signature: "sig" },
              { type: "text", text: "Listing." },
              { type: "tool_use", id: "toolu_1", name: "Bash", input: { command: "ls" } },
              { type: "tool_use", id: "toolu_2", name: "Read", input: { file_path: "/x" } },
            ],
          },
          {
            role: "user",
            content: [
              { type: "tool_result", tool_use_id: "toolu_1", content: "a.txt" },
              { type: "tool_result", tool_use_id: "toolu_2", content: [{ type: "text", text: "no such file" }], is_error: true },
              { type: "text", text: "now what?" },
            ],
          },
        ],
      }),
      opts,
    );
    expect(input.messages).toEqual([
      { role: "user", content: "list files" },
      {
        role: "assistant",
        content: "Listing.",
        reasoning_content: "use Bash",
        tool_calls: [
          { id: "toolu_1", type: "function", function: { name: "Bash", arguments: { command: "ls" } } },
          { id: "toolu_2", type: "function", function: { name: "Read", arguments: { file_path: "/x" } } },
        ],
      },
      { role: "tool", content: "a.txt", tool_call_id: "toolu_1", name: "Bash" },
      { role: "tool", content: "Error: no such file", tool_call_id: "toolu_2", name: "Read" },
      { role: "user", content: "now what?" },
    ]);
  });

  test("tool_result content of other block types (tool_reference) is kept as JSON text", () => {
    const input = toPromptInput(
      req({
        messages: [
          { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "ToolSearch", input: {} }] },
          { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content: [{ type: "tool_reference", tool_name: "Grep" } as never] }] },
        ],
      }),
      opts,
    );
    expect(input.messages[1]!.content).toContain('"tool_name":"Grep"');
  });

  test("a tool_result whose id matches no earlier tool_use is a 400", () => {
    const bad = req({ messages: [{ role: "user", content: [{ type: "tool_result", tool_use_id: "nope", content: "x" }] }] });
    expect(() => toPromptInput(bad, opts)).toThrow(InvalidRequestError);
    expect(() => toPromptInput(bad, opts)).toThrow(/tool_use_id/);
  });

  test("images are a clear 400 unless the model supports vision", () => {
    const withImage = req({
      messages: [{ role: "user", content: [{ type: "image", source: { type: "base64", media_type: "image/png", data: "AA==" } as never }] }],
    });
    expect(() => toPromptInput(withImage, opts)).toThrow(/does not support images/);
    const inToolResult = req({
      messages: [
        { role: "assistant", content: [{ type: "tool_use", id: "t", name: "Shot", input: {} }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "t", content: [{ type: "image", source: { type: "base64" } }] }] },
      ],
    });
    expect(() => toPromptInput(inToolResult, opts)).toThrow(InvalidRequestError);
  });

  test("redacted thinking and unmodelled blocks are ignored", () => {
    const input = toPromptInput(
      req({
        messages: [
          { role: "user", content: [{ type: "text", text: "q" }, { type: "container_upload", file_id: "f" } as never] },
          { role: "assistant", content: [{ type: "redacted_thinking", data: "xx" }, { type: "text", text: "a" }] },
        ],
      }),
      opts,
    );
    expect(input.messages).toEqual([
      { role: "user", content: "q" },
      { role: "assistant", content: "a" },
    ]);
  });
});

describe("tools, thinking, sampling", () => {
  test("tools -> function specs; strict kept (the worker enforces it by grammar); deferred and schema-less server tools skipped", () => {
    expect(
      translateTools([
        { name: "Bash", description: "run", input_schema: { type: "object", properties: {} }, strict: true } as never,
        { name: "Later", input_schema: { type: "object" }, defer_loading: true } as never,
        { type: "web_search_20250305", name: "web_search" } as never,
      ]),
    ).toEqual([
      { type: "function", function: { name: "Bash", description: "run", parameters: { type: "object", properties: {} } }, strict: true },
    ]);
    expect(translateTools([])).toBeUndefined();
  });

  test.each([
    ["enabled", true],
    ["adaptive", true],
    ["disabled", false],
  ])("thinking %s -> enableThinking %p", (type, on) => {
    expect(toPromptInput(req({ thinking: { type } }), opts).enableThinking).toBe(on);
  });

  test("no thinking field leaves the template default", () => {
    expect(toPromptInput(req({}), opts).enableThinking).toBeUndefined();
  });

  test("sampling, stops, and max_tokens clamped to the context", () => {
    const g = toGenerateRequest(
      req({ max_tokens: 128000, temperature: 0.2, top_p: 0.9, top_k: 40, stop_sequences: ["END", ""] }),
      { ...opts, contextLength: 4096, requestId: "req_1" },
    );
    expect(g).toMatchObject({ requestId: "req_1", maxTokens: 4096, temperature: 0.2, topP: 0.9, topK: 40, stop: ["END"] });
    const plain = toGenerateRequest(req({}), { ...opts, requestId: "r" });
    expect(plain.maxTokens).toBe(100);
    // Unset: the local worker samples with the model's generation_config.json (upstreams: 1.0).
    expect(plain).not.toHaveProperty("temperature");
    expect(plain).not.toHaveProperty("stop");
  });
});

describe("the Claude Code fixture", () => {
  const fixture = JSON.parse(readFileSync(resolve(import.meta.dir, "../../fixtures/claude-code-first-turn.json"), "utf8"));
  const g = toGenerateRequest(fixture.body, { ...opts, contextLength: 32768, requestId: "req_f" });

  test("billing header gone, system first, the environment note moved before the user's request", () => {
    expect(JSON.stringify(g.messages)).not.toContain("x-anthropic-billing-header");
    expect(g.messages.map((m) => m.role)).toEqual(["system", "system", "user"]);
    expect(g.messages[0]!.content.startsWith("You are a Claude agent")).toBe(true);
    expect(g.messages[1]!.content).toContain("# Environment");
  });

  test("its last cache_control (on the in-conversation system block) ends the cacheable prefix", () => {
    // The note moved before the user turn; the prefix still covers both.
    expect(g.cachePrefix).toEqual({ messages: 3 });
  });

  test("tools, thinking and limits", () => {
    expect(g.tools?.map((t) => t.function.name)).toContain("Bash");
    // Deferred tools (defer_loading) stay out of the model's context.
    const deferred = fixture.body.tools.filter((t: { defer_loading?: boolean }) => t.defer_loading === true).length;
    expect(g.tools).toHaveLength(fixture.body.tools.length - deferred);
    expect(g.enableThinking).toBe(true);
    expect(g.maxTokens).toBe(32768);
  });
});

describe("hopeless prompts", () => {
  test("count_tokens' translation refuses them too, before the engine tokenizes megabytes", () => {
    const body = { model: "m", messages: [{ role: "user" as const, content: "x".repeat(64 * 1000 + 64) }] };
    expect(() => toPromptInput(body as never, { model: "m", supportsVision: false, contextLength: 1000 })).toThrow(
      /prompt has 1001 tokens; the context holds 1000/,
    );
    // Without a known context there is nothing to compare with.
    expect(toPromptInput(body as never, { model: "m", supportsVision: false }).messages).toHaveLength(1);
  });

  test("a prompt that cannot fit however it tokenizes is refused before the engine sees it", () => {
    const body = { model: "m", max_tokens: 10, messages: [{ role: "user" as const, content: "x".repeat(64 * 1000 + 64) }] };
    expect(() => toGenerateRequest(body as never, { model: "m", supportsVision: false, contextLength: 1000, requestId: "r" })).toThrow(
      /prompt has 1001 tokens; the context holds 1000/,
    );
  });
  test("a prompt that may fit goes through to the engine's exact count", () => {
    const body = { model: "m", max_tokens: 10, messages: [{ role: "user" as const, content: "x".repeat(64 * 1000) }] };
    expect(toGenerateRequest(body as never, { model: "m", supportsVision: false, contextLength: 1000, requestId: "r" }).messages).toHaveLength(1);
  });
});

// Anthropic's prefill rules live here, for every backend; engines follow `continueFinal`.
describe("prefill rules", () => {
  const opts = { model: "m", supportsVision: false, requestId: "r" };
  const user = { role: "user" as const, content: "What is two plus two?" };
  const gen = (messages: unknown[], extra: Record<string, unknown> = {}) =>
    toGenerateRequest({ model: "m", max_tokens: 10, messages, ...extra } as never, opts);

  test("a final assistant message with text is a prefill, kept last and marked", () => {
    const g = gen([user, { role: "assistant", content: "The answer is" }]);
    expect(g.messages.at(-1)).toEqual({ role: "assistant", content: "The answer is" });
    expect(g.continueFinal).toBe(true);
    expect(toPromptInput({ model: "m", messages: [user, { role: "assistant", content: "The answer is" }] } as never, opts).continueFinal).toBe(true);
  });

  test("a blank final assistant turn is dropped: a new turn, not a prefill", () => {
    for (const content of ["", "  \n", [{ type: "text", text: " " }]]) {
      const g = gen([user, { role: "assistant", content }]);
      expect(g.messages).toEqual([{ role: "user", content: user.content }]);
      expect(g.continueFinal).toBeUndefined();
    }
  });

  test("a lone blank assistant turn stays (a conversation is never empty), unmarked", () => {
    const g = gen([{ role: "assistant", content: "" }]);
    expect(g.messages).toEqual([{ role: "assistant", content: "" }]);
    expect(g.continueFinal).toBeUndefined();
  });

  test("a final assistant turn with tool calls, or only thinking, is neither dropped nor continued", () => {
    const call = gen([user, { role: "assistant", content: [{ type: "tool_use", id: "toolu_1", name: "Bash", input: {} }] }]);
    expect(call.messages).toHaveLength(2);
    expect(call.continueFinal).toBeUndefined();
    const thought = gen([user, { role: "assistant", content: [{ type: "thinking", thinking: "hm", signature: "s" }] }]);
    expect(thought.messages.at(-1)).toMatchObject({ role: "assistant", content: "", reasoning_content: "hm" });
    expect(thought.continueFinal).toBeUndefined();
  });

  test("a breakpoint on a dropped blank turn stays within the messages", () => {
    const g = gen([
      { role: "user", content: [{ type: "text", text: "hi", cache_control: { type: "ephemeral" } }] },
      { role: "assistant", content: [{ type: "text", text: "", cache_control: { type: "ephemeral" } }] },
    ]);
    expect(g.messages).toHaveLength(1);
    expect(g.cachePrefix).toEqual({ messages: 1 });
  });
});

describe("prefill rules: blank as the worker sees it", () => {
  test("Python's whitespace, not JS trim's: \\x1c is blank, \\ufeff is text", () => {
    const opts = { model: "m", supportsVision: false };
    const input = (content: string) =>
      toPromptInput({ model: "m", messages: [{ role: "user", content: "hi" }, { role: "assistant", content }] } as never, opts);
    expect(input("\x1c\x85 ").messages).toHaveLength(1);
    expect(input("\ufeff").continueFinal).toBe(true);
  });
});
