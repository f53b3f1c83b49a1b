import { describe, expect, test } from "bun:test";
import { repeatedToolCall } from "../../../src/anthropic/repeat-guard";
import type { ChatMessage, GenerateRequest } from "../../../src/engine/types";
import { type ScriptStep, textScript } from "../../support/fake-engine";
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

describe("a call repeating the one just answered (answered-calls.ts), through createApp", () => {
  // The model calls Bash("ls") again after its result; without tools offered it answers.
  const script = (req: GenerateRequest): ScriptStep[] =>
    req.tools?.length
      ? [{ type: "started", promptTokens: 50, cachedTokens: 10 }, { type: "tool_call", name: "Bash", arguments: { command: "ls" } }, { type: "done", finishReason: "tool_calls", promptTokens: 50, completionTokens: 9, cachedTokens: 10 }]
      : textScript(["There is one file, a.txt."], 30);

  test("JSON: the answer from the result, end_turn, usage of the client's prompt", async () => {
    const h = makeApp({ engine: { script } });
    const msg = (await (await postMessages(h, history(1))).json()) as any;
    expect(msg.stop_reason).toBe("end_turn");
    expect(msg.content).toEqual([{ type: "text", text: "There is one file, a.txt." }]);
    expect(msg.usage.input_tokens + msg.usage.cache_read_input_tokens).toBe(50);
    expect(h.engine.requests).toHaveLength(2);
    const second = h.engine.requests[1]!;
    expect(second.tools).toBeUndefined();
    expect(second.messages.map((m) => m.role)).toEqual(["user", "assistant", "user"]);
    expect(second.messages[2]!.content).toBe("The tool Bash returned:\na.txt");
  });

  test("SSE: one text block, no tool_use block ever started", async () => {
    const h = makeApp({ engine: { script } });
    const events = parseSse(await (await postMessages(h, { ...history(1), stream: true })).text());
    expect(events.map((e) => e.event)).toEqual(["message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]);
    expect((events[2]!.data as any).content_block.type).toBe("text");
    expect((events.at(-2)!.data as any).delta.stop_reason).toBe("end_turn");
  });

  test("--answer-repeated-calls off: the repeat is returned as it is", async () => {
    const h = makeApp({ engine: { script }, config: { answerRepeatedCalls: false } });
    const msg = (await (await postMessages(h, history(1))).json()) as any;
    expect(msg.stop_reason).toBe("tool_use");
    expect(h.engine.requests).toHaveLength(1);
  });
});
