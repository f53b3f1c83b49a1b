/**
 * Figure 7, translation cost on a pathological body: 200,000 consecutive same-role messages
 * (about 8 MB), which once kept the event loop (and /health) busy for ~30 s because merging
 * re-joined the accumulated text per message. Each step is timed alone, then the whole request
 * in process (app.handle: body parse, Elysia's normalizer and validation, translation, gate).
 */
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { appTuning, createApp } from "../../src/app";
import { MessagesRequest, type MessagesRequestT } from "../../src/anthropic/schemas";
import { toGenerateRequest } from "../../src/anthropic/translate";
import { memoryThresholds, serveDefaults } from "../../src/config";
import type { MemoryMonitor } from "../../src/memory/types";
import { FakeEngine } from "../../test/support/fake-engine";
import type { Row, SectionResult } from "../lib/report";
import { log, median, sig } from "../lib/util";

const TOKEN = "bench-token";
const MESSAGES = 200_000;
const TARGET_MS = 1000;

/** The body: one user turn after another, each a short line. */
export function sameRoleBody(n = MESSAGES): MessagesRequestT {
  const messages = Array.from({ length: n }, (_, i) => ({ role: "user" as const, content: `line ${i}` }));
  return { model: "claude-sonnet-4-5", max_tokens: 16, messages };
}

function timeMs(repeats: number, fn: () => unknown): number {
  const runs: number[] = [];
  for (let r = 0; r < repeats; r++) {
    Bun.gc(true);
    const t0 = performance.now();
    fn();
    runs.push(performance.now() - t0);
  }
  return median(runs);
}

async function requestMs(json: string, repeats: number): Promise<number> {
  const limits = memoryThresholds(serveDefaults());
  const safe: MemoryMonitor = { checkStatus: () => "safe", availableGb: () => 64, thresholds: () => ({ ...limits }) };
  // A context large enough that the body is translated, not refused as hopeless.
  const engine = new FakeEngine({ model: { contextLength: 100_000_000 } });
  const app = createApp({ engine, memory: safe, config: { ...appTuning(serveDefaults()), token: TOKEN, aliases: "*=default", allowedHosts: [], version: "bench" }, docs: false });
  const runs: number[] = [];
  for (let r = 0; r < repeats + 1; r++) {
    Bun.gc(true);
    const t0 = performance.now();
    const res = await app.handle(
      new Request("http://localhost/v1/messages", { method: "POST", headers: { "content-type": "application/json", "x-api-key": TOKEN }, body: json }),
    );
    const text = await res.text();
    if (res.status !== 200) throw new Error(`/v1/messages answered ${res.status}: ${text.slice(0, 200)}`);
    if (r > 0) runs.push(performance.now() - t0); // the first warms Elysia's compiled handler
  }
  return median(runs);
}

const row = (measure: string, ms: number, target: boolean): Row => ({
  figure: "Translation",
  measure,
  value: `${ms.toFixed(1)} ms`,
  reference: "",
  ratio: null,
  target: target ? `< ${TARGET_MS} ms` : "",
  met: target ? ms < TARGET_MS : null,
});

export async function translateSection(opts: { quick: boolean }): Promise<SectionResult> {
  const repeats = opts.quick ? 3 : 7;
  const body = sameRoleBody();
  const json = JSON.stringify(body);
  const mb = json.length / 1e6;
  log(`translate: ${MESSAGES} same-role messages, ${mb.toFixed(1)} MB, ${repeats} repeats`);
  const opts1 = { model: "served", supportsVision: false, requestId: "bench", contextLength: 100_000_000 };
  const check = TypeCompiler.Compile(MessagesRequest);
  const parseMs = timeMs(repeats, () => JSON.parse(json));
  const checkMs = timeMs(repeats, () => {
    if (!check.Check(body)) throw new Error("the bench body fails the schema");
  });
  let merged = 0;
  const translateMs = timeMs(repeats, () => (merged = toGenerateRequest(body, opts1).messages.length));
  if (merged !== 1) throw new Error(`expected one merged message, got ${merged}`);
  const wholeMs = await requestMs(json, repeats);
  const what = `${MESSAGES / 1000}k same-role messages (${mb.toFixed(1)} MB)`;
  return {
    key: "translate",
    title: "7. Translation",
    data: {
      messages: MESSAGES,
      bodyMb: sig(mb),
      parseMs: sig(parseMs),
      schemaCheckMs: sig(checkMs),
      translateMs: sig(translateMs),
      wholeRequestMs: sig(wholeMs),
      method: "medians after Bun.gc(true); translate = toGenerateRequest on the parsed body; whole = app.handle(POST /v1/messages) with FakeEngine and a constant-Safe monitor",
    },
    rows: [
      row(`${what}: toGenerateRequest`, translateMs, true),
      row(`${what}: schema check (compiled TypeBox)`, checkMs, false),
      row(`${what}: JSON.parse`, parseMs, false),
      row(`${what}: whole /v1/messages in process`, wholeMs, true),
    ],
    bars: [],
    notes: [`the same body once took ~30 s to translate (merging re-joined the accumulated text per message)`],
  };
}
