import { describe, expect, test } from "bun:test";
import { makeApp, postMessages, simpleBody } from "./harness";

const withInput = (input: unknown) =>
  simpleBody({
    messages: [
      { role: "user", content: "list files" },
      { role: "assistant", content: [{ type: "text", text: "Listing." }, { type: "tool_use", id: "toolu_1", name: "Bash", input }] },
      { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_1", content: "a.txt" }] },
    ],
  });

describe("tool_use.input must be an object, as Anthropic requires", () => {
  test.each([
    ["an array", []],
    ["an array of values", ["ls"]],
    ["a string", '{"command":"ls"}'],
    ["a number", 5],
    ["null", null],
  ])("%s is a 400 naming the field (not silently turned into an object)", async (_name, input) => {
    const h = makeApp();
    const res = await postMessages(h, withInput(input));
    expect(res.status).toBe(400);
    const body = await res.json();
    expect(body.error).toEqual({ type: "invalid_request_error", message: "messages.1.content: 1.input: tool_use input must be a JSON object" });
    expect(h.engine.requests).toHaveLength(0);
  });

  test("an object passes through unchanged", async () => {
    const h = makeApp();
    expect((await postMessages(h, withInput({ command: "ls" }))).status).toBe(200);
    expect(h.engine.requests[0]!.messages[1]!.tool_calls![0]!.function.arguments).toEqual({ command: "ls" });
  });

  test("other bad blocks name their field too, instead of a bare union error", async () => {
    const h = makeApp();
    const res = await postMessages(h, simpleBody({ messages: [{ role: "user", content: [{ type: "text", text: 5 }] }] }));
    expect(res.status).toBe(400);
    expect((await res.json()).error.message).toBe("messages.0.content: 0.text: Expected string");
  });
});
