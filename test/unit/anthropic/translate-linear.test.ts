import { describe, expect, test } from "bun:test";
import type { MessagesRequestT } from "../../../src/anthropic/schemas";
import { toPromptInput } from "../../../src/anthropic/translate";
import type { ChatMessage } from "../../../src/engine/types";

const opts = { model: "served", supportsVision: false };
const req = (messages: unknown[]): MessagesRequestT => ({ model: "claude-x", max_tokens: 10, messages: messages as never });

// The merge as it was done turn by turn (re-joining each time): the reference for the one-pass merge.
function referenceMerge(msgs: ChatMessage[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  for (const msg of msgs) {
    const last = out[out.length - 1];
    const ok = (m: ChatMessage) => (m.role === "user" || m.role === "assistant") && !m.tool_call_id;
    if (last && last.role === msg.role && ok(last) && ok(msg)) {
      last.content = [last.content, msg.content].filter(Boolean).join("\n\n");
      if (msg.tool_calls) last.tool_calls = [...(last.tool_calls ?? []), ...msg.tool_calls];
      if (msg.reasoning_content) last.reasoning_content = [last.reasoning_content, msg.reasoning_content].filter(Boolean).join("\n\n");
    } else out.push({ ...msg });
  }
  return out;
}

describe("merging consecutive same-role turns in one pass", () => {
  test("200,000 consecutive user turns become one message with every line, in order", () => {
    const n = 200_000;
    const messages = Array.from({ length: n }, (_, i) => ({ role: "user", content: `line ${i}` }));
    const input = toPromptInput(req(messages), opts);
    expect(input.messages).toHaveLength(1);
    const content = input.messages[0]!.content;
    const lines = content.split("\n\n");
    expect(lines).toHaveLength(n);
    expect(lines[0]).toBe("line 0");
    expect(lines[123_456]).toBe("line 123456");
    expect(lines[n - 1]).toBe(`line ${n - 1}`);
    expect(content.length).toBe(messages.reduce((s, m) => s + m.content.length, 0) + 2 * (n - 1));
  });

  test("long alternating runs: tool calls and reasoning accumulate per merged turn", () => {
    const messages: unknown[] = [];
    for (let run = 0; run < 3; run++) {
      for (let i = 0; i < 1000; i++) messages.push({ role: "user", content: `u${run}.${i}` });
      for (let i = 0; i < 1000; i++)
        messages.push({
          role: "assistant",
          content: [
            { type: "thinking", thinking: `t${i}`, signature: "s" },
            { type: "text", text: `a${i}` },
            { type: "tool_use", id: `c${run}_${i}`, name: "Bash", input: { i } },
          ],
        });
    }
    const out = toPromptInput(req(messages), opts).messages;
    expect(out.map((m) => m.role)).toEqual(["user", "assistant", "user", "assistant", "user", "assistant"]);
    expect(out[1]!.tool_calls).toHaveLength(1000);
    expect(out[5]!.tool_calls![999]!.id).toBe("c2_999");
    expect(out[3]!.reasoning_content!.split("\n\n")).toHaveLength(1000);
    expect(out[4]!.content.startsWith("u2.0\n\nu2.1\n\n")).toBe(true);
  });

  test("empty parts, empty thinking and lone turns merge exactly as turn-by-turn joining did", () => {
    const turns = [
      { role: "user", content: "" },
      { role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "" }] },
      { role: "user", content: "b" },
      { role: "assistant", content: [{ type: "thinking", thinking: "", signature: "s" }] },
      { role: "assistant", content: [{ type: "thinking", thinking: "r", signature: "s" }, { type: "text", text: "" }] },
      { role: "assistant", content: "x" },
      { role: "user", content: "" },
      { role: "assistant", content: [{ type: "thinking", thinking: "", signature: "s" }, { type: "text", text: "y" }] },
      { role: "assistant", content: "z" },
    ];
    // Each turn alone (no merging possible) gives the per-turn messages the reference merges.
    const single = turns.map((t) => toPromptInput(req([t]), opts).messages[0]!);
    expect(toPromptInput(req(turns), opts).messages).toEqual(referenceMerge(single));
  });
});
