/**
 * Tool use through the real server, real worker and the tool-calling fixture model, checked with
 * the official @anthropic-ai/sdk and on the raw wire: streamed tool_use blocks, tool_choice,
 * multi-turn history with tool results and mid-conversation system messages, and the prompt cache.
 */
import Anthropic from "@anthropic-ai/sdk";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { checkAnthropicStream, parseSse, type WireEvent } from "../support/sse";
import { DEFAULT_TOKEN, type RunningServer, startServer, testPython } from "../support/server-process";
import { TOOL_CALL, TOOL_MARKER, toolModelDir } from "../support/tool-model";

setDefaultTimeout(180_000);

const MODEL = "claude-opus-5-5";
// The fixture's successor logit dwarfs all others: its output is the same at any temperature.
const BASH: Anthropic.Tool = {
  name: "Bash",
  description: "Executes a given bash command and returns its output.",
  input_schema: {
    type: "object",
    properties: { command: { type: "string" }, description: { type: "string" } },
    required: ["command"],
  },
};
const nonce = () => Math.random().toString(36).slice(2, 10);

let server: RunningServer;
let client: Anthropic;
// An injected memory source: the server reads "available bytes" from this file.
const memDir = mkdtempSync(join(tmpdir(), "pensieve-agent-mem-"));
const memFile = join(memDir, "available");
const setAvailableGb = (gb: number) => writeFileSync(memFile, String(Math.round(gb * 1024 ** 3)));

beforeAll(async () => {
  setAvailableGb(16);
  server = await startServer({
    args: ["--python", testPython(), "--model", await toolModelDir(), "--memory-source", `file:${memFile}`],
    // The fixture emits its whole call as one added token, which a call grammar (constrain.py)
    // never admits; these tests cover the unconstrained forced path. test_constrain.py covers the grammar.
    env: { PENSIEVE_CONSTRAIN: "0" },
  });
  client = new Anthropic({ baseURL: server.url, apiKey: DEFAULT_TOKEN, maxRetries: 0 });
}, 180_000);

afterAll(async () => {
  await server?.stop();
  rmSync(memDir, { recursive: true, force: true });
});

async function post(path: string, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": DEFAULT_TOKEN, "anthropic-version": "2023-06-01" },
    body: JSON.stringify(body),
  });
}

async function rawStream(body: Record<string, unknown>): Promise<WireEvent[]> {
  const res = await post("/v1/messages", { ...body, stream: true });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`status ${res.status}: ${text}`);
  return parseSse(text);
}

async function health(): Promise<Record<string, any>> {
  return (await (await fetch(`${server.url}/health`, { headers: { "x-api-key": DEFAULT_TOKEN } })).json()) as Record<string, any>;
}

describe("streamed tool calls", () => {
  test("the SDK's MessageStream ends with a tool_use whose input is parsed; stop_reason tool_use", async () => {
    const stream = client.messages.stream({
      model: MODEL,
      max_tokens: 64,
      tools: [BASH],
      messages: [{ role: "user", content: `run the echo ${nonce()}` }],
    });
    const fragments: string[] = [];
    stream.on("inputJson", (partial) => fragments.push(partial));
    const final = await stream.finalMessage();
    expect(final.stop_reason).toBe("tool_use");
    const uses = final.content.filter((b): b is Anthropic.ToolUseBlock => b.type === "tool_use");
    expect(uses.length).toBe(1);
    expect(uses[0]?.id).toMatch(/^toolu_[A-Za-z0-9]{24}$/);
    expect(uses[0]?.name).toBe(TOOL_CALL.name);
    expect(uses[0]?.input).toEqual(TOOL_CALL.input);
    expect(fragments.length).toBeGreaterThan(1);
    expect(fragments.join("")).toBe(JSON.stringify(TOOL_CALL.input));
  });

  test("raw SSE: content_block_start(tool_use) -> input_json_delta fragments -> content_block_stop", async () => {
    const events = await rawStream({
      model: MODEL,
      max_tokens: 64,
      temperature: 0,
      tools: [BASH],
      messages: [{ role: "user", content: `run the echo ${nonce()}` }],
    });
    const summary = checkAnthropicStream(events);
    expect(summary.stopReason).toBe("tool_use");
    const blockEvents = events.filter((e) => e.event.startsWith("content_block"));
    const start = blockEvents.findIndex((e) => e.data.content_block?.type === "tool_use");
    expect(start).toBeGreaterThanOrEqual(0);
    const startEv = blockEvents[start] as WireEvent;
    expect(startEv.data.content_block).toMatchObject({ type: "tool_use", name: "Bash", input: {} });
    const rest = blockEvents.slice(start + 1);
    const stop = rest.findIndex((e) => e.event === "content_block_stop");
    const deltas = rest.slice(0, stop);
    expect(deltas.length).toBeGreaterThan(1);
    for (const d of deltas) {
      expect(d.data.index).toBe(startEv.data.index);
      expect(d.data.delta.type).toBe("input_json_delta");
    }
    expect(JSON.parse(deltas.map((d) => d.data.delta.partial_json).join(""))).toEqual(TOOL_CALL.input);
  });

  test("non-streaming: the same tool_use block in one Message", async () => {
    const msg = await client.messages.create({
      model: MODEL,
      max_tokens: 64,
      tools: [BASH],
      messages: [{ role: "user", content: `run the echo ${nonce()}` }],
    });
    expect(msg.stop_reason).toBe("tool_use");
    expect(msg.content.find((b) => b.type === "tool_use")).toMatchObject({ type: "tool_use", name: "Bash", input: TOOL_CALL.input });
  });

  test("tool_choice any forces a call; none leaves the output as text; disable_parallel_tool_use is accepted", async () => {
    const ask = (tool_choice: Anthropic.ToolChoice) =>
      client.messages.create({
        model: MODEL,
        max_tokens: 64,
        tools: [BASH],
        tool_choice,
        messages: [{ role: "user", content: `run the echo ${nonce()}` }],
      });
    for (const choice of [{ type: "any" }, { type: "auto", disable_parallel_tool_use: true }] as const) {
      const msg = await ask(choice);
      expect(msg.stop_reason).toBe("tool_use");
      expect(msg.content.filter((b) => b.type === "tool_use").length).toBe(1);
    }
    const none = await ask({ type: "none" });
    expect(none.content.some((b) => b.type === "tool_use")).toBe(false);
    expect(none.stop_reason).toBe("end_turn");
    const text = none.content.map((b) => (b.type === "text" ? b.text : "")).join("");
    expect(text).toContain(TOOL_MARKER); // the call, unparsed, as text
  });

  test("tool_choice tool: a call to the named tool, or (when the forced call does not parse) text, never a failure", async () => {
    // The fixture model restarts its chain after the forced `{"name": "Bash", "arguments": ` prefix,
    // so what it writes is not a valid call: the worker must hand it back as text.
    const msg = await client.messages.create({
      model: MODEL,
      max_tokens: 64,
      tools: [BASH],
      tool_choice: { type: "tool", name: "Bash" },
      messages: [{ role: "user", content: `run the echo ${nonce()}` }],
    });
    const use = msg.content.find((b) => b.type === "tool_use");
    if (use) expect(use).toMatchObject({ name: "Bash", input: TOOL_CALL.input });
    else {
      expect(msg.stop_reason).toBe("end_turn");
      expect(msg.content.map((b) => (b.type === "text" ? b.text : "")).join("")).toContain(TOOL_MARKER);
    }
  });
});

describe("multi-turn history", () => {
  const firstTurn = (id: string): Anthropic.MessageParam[] => [
    { role: "user", content: "run the echo" },
    { role: "assistant", content: [{ type: "text", text: "Running it." }, { type: "tool_use", id, name: "Bash", input: TOOL_CALL.input }] },
  ];

  test("tool_result as a string, as blocks, with is_error, and mid-conversation system messages render and are served", async () => {
    const id1 = "toolu_aaaaaaaaaaaaaaaaaaaaaaaa";
    const id2 = "toolu_bbbbbbbbbbbbbbbbbbbbbbbb";
    const messages = [
      ...firstTurn(id1),
      { role: "user", content: [{ type: "tool_result", tool_use_id: id1, content: `${TOOL_MARKER}\n` }] },
      { role: "system", content: "The tool ran. Keep going." },
      { role: "assistant", content: [{ type: "tool_use", id: id2, name: "Bash", input: { command: "false" } }] },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: id2, is_error: true, content: [{ type: "text", text: "exit code 1" }] },
          { type: "text", text: "Try again." },
        ],
      },
    ];
    const body = { model: MODEL, max_tokens: 64, temperature: 0, tools: [BASH], system: "You are an agent.", messages };
    const count = await post("/v1/messages/count_tokens", body);
    expect(count.status).toBe(200);
    const n = ((await count.json()) as { input_tokens: number }).input_tokens;
    // The tool result is rendered: a longer result makes a longer prompt.
    const longer = structuredClone(body);
    (longer.messages[2] as { content: Array<{ content: string }> }).content[0]!.content = `${TOOL_MARKER}\n`.repeat(20);
    const n2 = ((await (await post("/v1/messages/count_tokens", longer)).json()) as { input_tokens: number }).input_tokens;
    expect(n2).toBeGreaterThan(n);

    const summary = checkAnthropicStream(await rawStream(body));
    expect(summary.usage.input_tokens + summary.usage.cache_read_input_tokens + summary.usage.cache_creation_input_tokens).toBe(n);
    expect(summary.stopReason).toBe("tool_use");
  });

  test("an unknown tool_use_id is a 400 invalid_request_error", async () => {
    const res = await post("/v1/messages", {
      model: MODEL,
      max_tokens: 8,
      messages: [{ role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_nope", content: "x" }] }],
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { type: string } }).error.type).toBe("invalid_request_error");
  });
});

describe("prompt-prefix cache", () => {
  test("a repeated long prefix is reused: cache_read_input_tokens and /health hits and tokens reused", async () => {
    const before = (await health()).engine.promptCache as Record<string, number>;
    // Plain checks: Bun's toMatchObject writes asymmetric matchers into the object it is given.
    expect(typeof before.maxEntries).toBe("number");
    expect(typeof before.hits).toBe("number");
    const system = `You are a careful agent ${nonce()}. ` + "Follow the project's rules. ".repeat(120);
    const turn = (last: string) =>
      client.messages.create({ model: MODEL, max_tokens: 16, tools: [BASH], system, messages: [{ role: "user", content: last }] });
    const first = await turn("run the echo");
    // Only the chat template's opening can match an earlier request's prompt.
    expect(first.usage.cache_read_input_tokens ?? 0).toBeLessThan(50);
    const second = await turn("run the echo again");
    const reused = second.usage.cache_read_input_tokens ?? 0;
    expect(reused).toBeGreaterThan(500);
    // No cache_control breakpoint: nothing counts as a cache write, the new tail is plain input.
    expect(second.usage.cache_creation_input_tokens ?? 0).toBe(0);
    expect(second.usage.input_tokens).toBeGreaterThan(0);
    const after = (await health()).engine.promptCache as { hits: number; tokensReused: number; entries: number; bytes: number };
    expect(after.hits).toBeGreaterThan(before.hits as number);
    expect(after.tokensReused - (before.tokensReused as number)).toBeGreaterThanOrEqual(reused);
    expect(after.entries).toBeGreaterThanOrEqual(1);
    expect(after.bytes).toBeGreaterThan(0);
  });
});

// Last: it leaves the server's memory level raised.
describe("memory pressure gives up the prompt cache first", () => {
  type Cache = { entries: number; bytes: number };
  const cacheOf = async () => (await health()).engine.promptCache as Cache;
  async function waitCache(what: string, ok: (c: Cache) => boolean): Promise<Cache> {
    const deadline = Date.now() + 30_000;
    for (let c = await cacheOf(); ; c = await cacheOf()) {
      if (ok(c)) return c;
      if (Date.now() > deadline) throw new Error(`prompt cache never became ${what}: ${JSON.stringify(c)}`);
      await Bun.sleep(100);
    }
  }

  test("trimmed at Caution, dropped at Warning, while requests are still served", async () => {
    for (let i = 0; i < 4; i++) {
      await client.messages.create({ model: MODEL, max_tokens: 8, system: `prefix ${i} ${nonce()} `.repeat(50), messages: [{ role: "user", content: "hi" }] });
    }
    const full = await cacheOf();
    expect(full.entries).toBeGreaterThanOrEqual(2);
    setAvailableGb(2.5); // Caution (2-3 GB)
    const trimmed = await waitCache("trimmed", (c) => c.bytes <= full.bytes / 2);
    expect(trimmed.entries).toBeLessThan(full.entries);
    expect((await health()).memory.status).toBe("caution");
    setAvailableGb(1.5); // Warning (1-2 GB): still served, cache gone
    await waitCache("empty", (c) => c.entries === 0 && c.bytes === 0);
    expect((await health()).memory.status).toBe("warning");
    const msg = await client.messages.create({ model: MODEL, max_tokens: 8, tools: [BASH], messages: [{ role: "user", content: "run the echo" }] });
    expect(msg.stop_reason).toBe("tool_use");
  });
});
