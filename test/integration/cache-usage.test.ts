/**
 * Cache accounting through the real server, worker and tiny model: writes only up to the
 * request's last cache_control breakpoint, as Anthropic counts them.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { DEFAULT_TOKEN, type RunningServer, startServer, testPython, tinyModelDir } from "../support/server-process";

setDefaultTimeout(180_000);

let server: RunningServer;
type Usage = { input_tokens: number; output_tokens: number; cache_read_input_tokens: number; cache_creation_input_tokens: number };

beforeAll(async () => {
  server = await startServer({ args: ["--python", testPython(), "--model", await tinyModelDir()] });
}, 180_000);

afterAll(async () => {
  await server?.stop();
});

async function post(path: string, body: Record<string, unknown>): Promise<Record<string, any>> {
  const res = await fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": DEFAULT_TOKEN, "anthropic-version": "2023-06-01" },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, any>;
}

const total = (u: Usage) => u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens;

describe("usage through the server", () => {
  const nonce = Math.random().toString(36).slice(2, 10);
  const system = `You are a careful agent ${nonce}. ` + "Follow the project's rules. ".repeat(40);
  const messages = [{ role: "user", content: "hello there" }];

  test("without cache_control: no cache writes; the prompt is input_tokens", async () => {
    const m = await post("/v1/messages", { model: "claude-x", max_tokens: 4, temperature: 0, system: `a ${system}`, messages });
    const counted = (await post("/v1/messages/count_tokens", { model: "claude-x", system: `a ${system}`, messages })).input_tokens;
    expect(m.usage.cache_creation_input_tokens).toBe(0);
    expect(total(m.usage)).toBe(counted);
    expect(m.usage.input_tokens).toBeGreaterThan(counted / 2);
  });

  test("with cache_control on the system prompt: writes up to it, the rest is input_tokens", async () => {
    const sys = [{ type: "text", text: `b ${system}`, cache_control: { type: "ephemeral" } }];
    const m = await post("/v1/messages", { model: "claude-x", max_tokens: 4, temperature: 0, system: sys, messages });
    const u = m.usage as Usage;
    const counted = (await post("/v1/messages/count_tokens", { model: "claude-x", system: sys, messages })).input_tokens;
    expect(total(u)).toBe(counted);
    // The system turn is most of the prompt; the user turn and generation prompt are not writes.
    expect(u.cache_creation_input_tokens).toBeGreaterThan(counted / 2);
    expect(u.input_tokens).toBeGreaterThan(0);
    // The same prefix again is read, not written.
    const again = (await post("/v1/messages", { model: "claude-x", max_tokens: 4, temperature: 0, system: sys, messages })).usage as Usage;
    expect(again.cache_read_input_tokens).toBeGreaterThanOrEqual(u.cache_creation_input_tokens);
    expect(again.cache_creation_input_tokens).toBe(0);
    expect(total(again)).toBe(counted);
  });
});
