import { describe, expect, test } from "bun:test";
import { repeatedToolCall } from "../../../src/anthropic/repeat-guard";
import type { ChatMessage } from "../../../src/engine/types";
import { makeApp, parseSse, postMessages, simpleBody } from "./harness";

const BASH = { name: "Bash", description: "Run a command", input_schema: { type: "object", properties: { command: { type: "string" } } } };

// `turns` assistant turns each calling Bash with `command`, each answered by a tool_result.
function history(turns: number, command = "ls", extraUser?: string) {
  const messages: Record<string, unknown>[] = [{ role: "user", content: "list the files" }];
  for (let i = 0; i < turns; i++) {
    messages.push({ role: "assistant", content: [{ type: "tool_use", id: `toolu_${i}`, name: "Bash", input: { command } }] });
    const content: Record<string, unknown>[] = [{ type: "tool_result", tool_use_id: `toolu_${i}`, content: "a.txt" }];
    if (extraUser && i === turns - 1) content.push({ type: "text", text: extraUser });
    messages.push({ role: "user", content });
  }
  return simpleBody({ tools: [BASH], messages });
}

describe("the same tool call, turn after turn", () => {
  test("three identical calls in a row: a short text turn, and the engine is not asked to generate", async () => {
    const h = makeApp();
    const res = await postMessages(h, history(3));
    expect(res.status).toBe(200);
    const msg = (await res.json()) as any;
    expect(msg.stop_reason).toBe("end_turn");
    expect(msg.content).toHaveLength(1);
    expect(msg.content[0].text).toContain("`Bash` with the same input 3 times in a row");
    expect(h.engine.requests).toHaveLength(0);
    // Usage still counts the prompt, as the engine would have.
    expect(msg.usage.input_tokens).toBeGreaterThan(0);
  });

  test("streams the same reply in Anthropic's event order", async () => {
    const h = makeApp();
    const res = await postMessages(h, { ...history(3), stream: true });
    const events = parseSse(await res.text()).map((e) => e.event);
    expect(events).toEqual(["message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]);
    expect(h.engine.requests).toHaveLength(0);
  });

  test("two repeats, different inputs, a new user question, or a limit of 0: the model generates", async () => {
    for (const [body, limit] of [
      [history(2), 3],
      [history(3, "ls"), 0],
      [history(3, "ls", "now try something else"), 3],
    ] as const) {
      const h = makeApp({ config: { repeatToolLimit: limit } });
      await (await postMessages(h, body)).json();
      expect(h.engine.requests).toHaveLength(1);
    }
  });

  test("key order in the input does not hide a repeat; a different call ends the run", () => {
    const call = (args: Record<string, unknown>, id: string): ChatMessage[] => [
      { role: "assistant", content: "", tool_calls: [{ id, type: "function", function: { name: "Read", arguments: args } }] },
      { role: "tool", content: "x", tool_call_id: id },
    ];
    const base: ChatMessage[] = [{ role: "user", content: "go" }];
    const same = [...base, ...call({ a: 1, b: 2 }, "1"), ...call({ b: 2, a: 1 }, "2"), ...call({ a: 1, b: 2 }, "3")];
    expect(repeatedToolCall(same, 3)).toBe("Read");
    const broken = [...base, ...call({ a: 1 }, "1"), ...call({ a: 2 }, "2"), ...call({ a: 2 }, "3")];
    expect(repeatedToolCall(broken, 3)).toBeNull();
    expect(repeatedToolCall(broken, 2)).toBe("Read");
  });
});
