import { describe, expect, test } from "bun:test";
import type { MessagesRequestT } from "../../../src/anthropic/schemas";
import { toGenerateRequest } from "../../../src/anthropic/translate";
import { generatePayload } from "../../../src/bridge/generation-job";

const opts = { model: "served", supportsVision: false, requestId: "r" };
const cc = { cache_control: { type: "ephemeral" } };
const gen = (extra: Record<string, unknown>) =>
  toGenerateRequest({ model: "claude-x", max_tokens: 10, messages: [{ role: "user", content: "hi" }], ...extra } as MessagesRequestT, opts);

describe("translation finds the last cache breakpoint (GenerateRequest.cachePrefix)", () => {
  test("no cache_control: no cachePrefix, and none sent to the worker", () => {
    const g = gen({ system: [{ type: "text", text: "S" }] });
    expect(g.cachePrefix).toBeUndefined();
    expect(generatePayload(g).cache_prefix).toBeUndefined();
  });

  test("on the system prompt: the system message", () => {
    expect(gen({ system: [{ type: "text", text: "S", ...cc }] }).cachePrefix).toEqual({ messages: 1 });
  });

  test("on an earlier system block: the system message cut after that block", () => {
    const g = gen({ system: [{ type: "text", text: "static", ...cc }, { type: "text", text: "dynamic" }] });
    expect(g.messages[0]!.content).toBe("static\n\ndynamic");
    expect(g.cachePrefix).toEqual({ messages: 1, contentChars: "static".length });
  });

  test("the billing-header block is dropped but its breakpoint still counts (tools only)", () => {
    const billing = { type: "text", text: "x-anthropic-billing-header: cc_version=1;", ...cc };
    expect(gen({ system: [billing, { type: "text", text: "S" }] }).cachePrefix).toEqual({ messages: 0 });
  });

  test("on a tool: tools only; a later system or message breakpoint wins", () => {
    const tools = [{ name: "Bash", input_schema: { type: "object" }, ...cc }];
    expect(gen({ tools }).cachePrefix).toEqual({ messages: 0 });
    expect(gen({ tools, system: [{ type: "text", text: "S", ...cc }] }).cachePrefix).toEqual({ messages: 1 });
  });

  test("Claude Code's shape: system and the last user block; the last one wins", () => {
    const g = gen({
      system: [{ type: "text", text: "S", ...cc }],
      messages: [
        { role: "user", content: "q1" },
        { role: "assistant", content: "a1" },
        { role: "user", content: [{ type: "text", text: "q2", ...cc }] },
      ],
    });
    expect(g.messages).toHaveLength(4);
    expect(g.cachePrefix).toEqual({ messages: 4 });
  });

  test("merged consecutive user turns: the breakpoint's turn ends inside the merged message", () => {
    const g = gen({
      messages: [
        { role: "user", content: [{ type: "text", text: "first", ...cc }] },
        { role: "user", content: "second" },
      ],
    });
    expect(g.messages).toEqual([{ role: "user", content: "first\n\nsecond" }]);
    expect(g.cachePrefix).toEqual({ messages: 1, contentChars: "first".length });
    const later = gen({
      messages: [
        { role: "user", content: "first" },
        { role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b", ...cc }, { type: "text", text: "c" }] },
      ],
    });
    expect(later.messages[0]!.content).toBe("first\n\na\n\nb\n\nc");
    expect(later.cachePrefix).toEqual({ messages: 1, contentChars: "first\n\na\n\nb".length });
  });

  test("on a tool_result: through that tool message; an assistant turn is covered whole", () => {
    const call = { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "Bash", input: {}, ...cc }] };
    expect(gen({ messages: [{ role: "user", content: "go" }, call] }).cachePrefix).toEqual({ messages: 2 });
    const g = gen({
      messages: [
        { role: "user", content: "go" },
        call,
        { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content: "ok", ...cc }, { type: "text", text: "next" }] },
      ],
    });
    expect(g.messages.map((m) => m.role)).toEqual(["user", "assistant", "tool", "user"]);
    expect(g.cachePrefix).toEqual({ messages: 3 });
  });

  test("the worker gets it in protocol terms", () => {
    const g = gen({ system: [{ type: "text", text: "static", ...cc }, { type: "text", text: "dynamic" }] });
    expect(generatePayload(g).cache_prefix).toEqual({ messages: 1, content_chars: 6 });
  });
});
