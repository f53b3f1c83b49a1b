import { describe, expect, test } from "bun:test";
import type { GenerateRequest, ToolSpec } from "../../../src/engine/types";
import { buildChatRequest } from "../../../src/upstream/translate";

const tool: ToolSpec = {
  type: "function",
  function: { name: "Read", description: "Read a file", parameters: { type: "object", properties: { file_path: { type: "string" } } } },
};

const base: GenerateRequest = {
  requestId: "req_1",
  maxTokens: 100,
  messages: [
    { role: "system", content: "You are Claude Code." },
    { role: "user", content: "read main.ts" },
    {
      role: "assistant",
      content: "",
      reasoning_content: "need the file",
      tool_calls: [{ id: "toolu_1", type: "function", function: { name: "Read", arguments: { file_path: "/main.ts" } } }],
    },
    { role: "tool", tool_call_id: "toolu_1", content: "console.log(1)" },
    { role: "system", content: "A reminder that sits mid-conversation." },
    { role: "assistant", content: "It logs 1." },
  ],
};

describe("buildChatRequest", () => {
  test("maps messages in place: system where it stands, tool_calls with JSON-string arguments, tool results", () => {
    const body = buildChatRequest(base, "qwen");
    expect(body.messages).toEqual([
      { role: "system", content: "You are Claude Code." },
      { role: "user", content: "read main.ts" },
      {
        role: "assistant",
        content: "",
        reasoning_content: "need the file",
        tool_calls: [{ id: "toolu_1", type: "function", function: { name: "Read", arguments: '{"file_path":"/main.ts"}' } }],
      },
      { role: "tool", tool_call_id: "toolu_1", content: "console.log(1)" },
      { role: "system", content: "A reminder that sits mid-conversation." },
      { role: "assistant", content: "It logs 1." },
    ]);
  });

  test("always streams with usage; Anthropic's temperature 1 unless set; omits the rest not asked for", () => {
    expect(buildChatRequest(base, "qwen")).toEqual({
      model: "qwen",
      messages: expect.any(Array),
      temperature: 1,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 100,
    });
    expect(buildChatRequest(base, undefined)).not.toHaveProperty("model");
  });

  test("sampling, stop, tools, tool choice, parallel calls and thinking", () => {
    const body = buildChatRequest(
      {
        ...base,
        temperature: 0.2,
        topP: 0.9,
        topK: 40,
        stop: ["</answer>"],
        tools: [tool],
        toolChoice: { name: "Read" },
        parallelToolCalls: false,
        enableThinking: false,
      },
      "qwen",
      { repetition_penalty: 1.05, chat_template_kwargs: { custom: 1 } },
    );
    expect(body).toMatchObject({
      temperature: 0.2,
      top_p: 0.9,
      top_k: 40,
      stop: ["</answer>"],
      tools: [tool],
      tool_choice: { type: "function", function: { name: "Read" } },
      parallel_tool_calls: false,
      chat_template_kwargs: { custom: 1, enable_thinking: false },
      repetition_penalty: 1.05,
    });
    expect(buildChatRequest({ ...base, tools: [tool], toolChoice: "required" }, "q").tool_choice).toBe("required");
  });

  test("no tools means no tool_choice; top_k 0 means disabled; empty stop is omitted", () => {
    const body = buildChatRequest({ ...base, toolChoice: "auto", topK: 0, stop: [] }, "q");
    expect(body).not.toHaveProperty("tool_choice");
    expect(body).not.toHaveProperty("tools");
    expect(body).not.toHaveProperty("top_k");
    expect(body).not.toHaveProperty("stop");
  });

  test("a prefill is continued the way vLLM and SGLang accept; without one neither flag is sent", () => {
    const body = buildChatRequest({ ...base, continueFinal: true }, "q", { add_generation_prompt: true });
    expect(body).toMatchObject({ continue_final_message: true, add_generation_prompt: false });
    expect(body.messages.at(-1)).toEqual({ role: "assistant", content: "It logs 1." });
    const plain = buildChatRequest(base, "q");
    expect(plain).not.toHaveProperty("continue_final_message");
    expect(plain).not.toHaveProperty("add_generation_prompt");
  });

  test("the request's fields win over extraBody", () => {
    const body = buildChatRequest(base, "q", { stream: false, max_tokens: 1, model: "other" });
    expect(body).toMatchObject({ stream: true, max_tokens: 100, model: "q" });
  });
});
