/**
 * The real server process, driven into Emergency through `--memory-source file:PATH` while a
 * stream is in flight: exit code 1, the emergency log and its fields, and a stream that ends
 * with `event: error` rather than hanging.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { EmergencyRecord } from "../../src/lifecycle/emergency-log";
import { BYTES_PER_GB } from "../../src/memory/levels";
import { DEFAULT_TOKEN, startServer, tinyModelDir, type RunningServer } from "../support/server-process";

// Spawns the server and the Python worker; a loaded 2-core machine can be slow.
setDefaultTimeout(120_000);

const work = mkdtempSync(join(tmpdir(), "pensieve-emergency-it-"));
const servers: RunningServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.stop("SIGKILL");
  rmSync(work, { recursive: true, force: true });
});

const setAvailable = (path: string, gb: number) => writeFileSync(path, String(Math.round(gb * BYTES_PER_GB)));

/** Reads an SSE body to its end; resolves with the raw text. */
async function readAll(body: ReadableStream<Uint8Array>, onChunk: (soFar: string) => void): Promise<string> {
  const dec = new TextDecoder();
  let text = "";
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return text;
    text += dec.decode(value, { stream: true });
    onChunk(text);
  }
}

describe("emergency shutdown of the real server", () => {
  test("a stream in flight ends with event: error, the server exits 1 and writes the log", async () => {
    const memFile = join(work, "available-bytes");
    const logDir = join(work, "logs");
    setAvailable(memFile, 8);
    const server = await startServer({
      args: ["--model", await tinyModelDir(), "--memory-source", `file:${memFile}`, "--log-dir", logDir, "--drain-timeout-ms", "500"],
    });
    servers.push(server);
    // The startup output says the memory figures are injected.
    expect(server.output()).toContain(`file:${memFile}`);

    const health = await (await fetch(`${server.url}/health`, { headers: { "x-api-key": DEFAULT_TOKEN } })).json();
    expect(health.memory.status).toBe("safe");
    expect(health.memory.source).toBe(`file:${memFile}`);

    const marker = "PROMPT-MARKER-4b1d";
    const res = await fetch(`${server.url}/v1/messages`, {
      method: "POST",
      headers: { "x-api-key": DEFAULT_TOKEN, "content-type": "application/json" },
      // Greedy decoding: the random-weight model never stops on its own, so the stream is long.
      body: JSON.stringify({ model: "claude-x", max_tokens: 20000, stream: true, temperature: 0, messages: [{ role: "user", content: marker }] }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-memory-status")).toBe("safe");
    const requestId = res.headers.get("request-id");

    // Once text is flowing, memory collapses.
    let collapsed = false;
    const text = await readAll(res.body!, (soFar) => {
      if (!collapsed && soFar.includes("content_block_delta")) {
        collapsed = true;
        setAvailable(memFile, 0.2);
      }
    });
    expect(collapsed).toBe(true);

    const frames = text.trim().split("\n\n");
    expect(frames[0]).toStartWith("event: message_start");
    const last = frames.at(-1)!;
    expect(last).toStartWith("event: error\n");
    const error = JSON.parse(last.split("\n")[1]!.slice("data: ".length));
    expect(error).toMatchObject({ type: "error", error: { type: "overloaded_error" } });
    expect(error.error.message).toMatch(/shutting down: memory emergency: 0\.20 GB available/);
    expect(text).not.toContain("event: message_stop");

    expect(await server.proc.exited).toBe(1);
    expect(server.output()).toContain("EMERGENCY SHUTDOWN");

    const files = readdirSync(logDir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^pensieve-emergency-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z\.log$/);
    const raw = readFileSync(join(logDir, files[0]!), "utf8");
    const log = JSON.parse(raw) as EmergencyRecord;
    expect(Date.parse(log.time)).not.toBeNaN();
    expect(log.reason).toContain("memory emergency: 0.20 GB available");
    expect(log.memory.source).toBe(`file:${memFile}`);
    expect(log.memory.thresholds_gb).toEqual({ caution: 3, warning: 2, critical: 1, emergency: 0.5 });
    const samples = log.memory.samples;
    expect(samples.length).toBeGreaterThanOrEqual(3);
    expect(samples[0]!.status).toBe("safe");
    expect(samples.at(-1)).toMatchObject({ status: "emergency", raw: "emergency", confirmation: true, available_gb: 0.2 });
    expect(log.in_flight).toEqual([{ id: requestId!, route: "POST /v1/messages", age_ms: expect.any(Number), streaming: true }]);
    expect(log.in_flight[0]!.age_ms).toBeGreaterThan(0);
    expect(log.drained).toBe(false);
    expect(log.aborted_streams).toBe(1);
    expect(log.bridge.stats?.state).toBeDefined();
    expect(log.bridge.stats?.workerPid).toEqual(expect.any(Number));
    expect(log.steps.map((s) => s.step)).toEqual(["log_reason", "stop_accepting", "drain", "abort_streams", "flush_streams", "clear_cache", "stop_bridge"]);
    // Never prompt text or generated text.
    expect(raw).not.toContain(marker);
    const generated = [...text.matchAll(/"text_delta","text":("(?:[^"\\]|\\.)*")/g)].map((m) => JSON.parse(m[1]!) as string).join("");
    expect(generated.length).toBeGreaterThan(10);
    expect(raw).not.toContain(JSON.stringify(generated.slice(0, 40)).slice(1, -1));
  });
});
