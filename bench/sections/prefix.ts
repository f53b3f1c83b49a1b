/**
 * Figure 4, the prompt-prefix cache: TTFT of a conversation's second turn over its first, on a
 * prompt the size of Claude Code's (test/fixtures/claude-code-first-turn.json). Turn 1 is the
 * fixture; turn 2 is the fixture + the assistant's reply + a new user message. Each repeat starts
 * a fresh conversation (a nonce at the head of the system prompt), so turn 1 is always cold.
 * Measured whether or not the cache exists: without it the ratio sits near 1.
 */
import { join } from "node:path";
import { anthropicStream, openaiStream, type RunTiming } from "../lib/clients";
import type { Bar, Row } from "../lib/report";
import { TOKEN, type Peer, type Pensieve } from "../lib/servers";
import { log, median, ratio, sig } from "../lib/util";
import { neutral } from "./engines";

const FIXTURE = join(import.meta.dir, "..", "..", "test", "fixtures", "claude-code-first-turn.json");
const FOLLOW_UP = "Thanks. Now list the files in the current directory and tell me which one is the entry point.";

type Body = Record<string, any>;

export async function fixtureBody(): Promise<Body> {
  const f = (await Bun.file(FIXTURE).json()) as { body: Body };
  return f.body;
}

/** Turn 1 of conversation `i`: the fixture with a nonce at the head of its first real system block. */
export function firstTurn(fixture: Body, i: number, maxTokens: number): Body {
  const body: Body = structuredClone(fixture);
  const nonce = `[bench conversation ${i}-${Math.random().toString(36).slice(2, 8)}] `;
  if (typeof body.system === "string") body.system = nonce + body.system;
  else {
    // Block 0 is Claude Code's billing header, which Pensieve drops; mark the next one.
    const idx = body.system.length > 1 ? 1 : 0;
    body.system[idx] = { ...body.system[idx], text: nonce + body.system[idx].text };
  }
  return { ...body, max_tokens: maxTokens, temperature: 0, stream: true };
}

export function secondTurn(first: Body, reply: string, followUp: string = FOLLOW_UP): Body {
  return {
    ...first,
    messages: [...first.messages, { role: "assistant", content: [{ type: "text", text: reply || "Hello." }] }, { role: "user", content: [{ type: "text", text: followUp }] }],
  };
}

interface TurnPair {
  t1: RunTiming;
  t2: RunTiming;
}

async function conversation(run: (b: Body) => Promise<RunTiming>, fixture: Body, i: number, maxTokens: number): Promise<TurnPair> {
  const b1 = firstTurn(fixture, i, maxTokens);
  const t1 = await run(b1);
  const t2 = await run(secondTurn(b1, t1.text));
  return { t1, t2 };
}

export interface PrefixResult {
  rows: Row[];
  bars: Bar[];
  data: Record<string, unknown>;
  notes: string[];
}

function summarise(pairs: TurnPair[]) {
  const t1 = median(pairs.map((p) => p.t1.ttftMs));
  const t2 = median(pairs.map((p) => p.t2.ttftMs));
  return {
    turn1TtftMs: sig(t1),
    turn2TtftMs: sig(t2),
    ratioOfMedians: sig(ratio(t2, t1)),
    ratio: median(pairs.map((p) => ratio(p.t2.ttftMs, p.t1.ttftMs))),
    turn1PromptTokens: median(pairs.map((p) => p.t1.inputTokens)),
    turn2PromptTokens: median(pairs.map((p) => p.t2.inputTokens)),
    turn2CachedTokens: median(pairs.map((p) => p.t2.cachedTokens)),
    samples: pairs.map((p) => ({ turn1TtftMs: sig(p.t1.ttftMs), turn2TtftMs: sig(p.t2.ttftMs), turn2CachedTokens: p.t2.cachedTokens, turn1PromptTokens: p.t1.inputTokens })),
  };
}

/** Run `repeats` two-turn conversations on Pensieve (and on the peer, when given). */
export async function measurePrefix(
  label: string,
  pensieve: Pensieve,
  peer: Peer | null,
  repeats: number,
  opts: { maxTokens?: number; warmup?: boolean; /** false: a diagnostic row, no target */ target?: boolean; about?: string } = {},
): Promise<PrefixResult> {
  const maxTokens = opts.maxTokens ?? 8;
  const fixture = await fixtureBody();
  const viaPensieve = (b: Body) => anthropicStream(pensieve.url, b, TOKEN);
  const viaPeer = (b: Body) => {
    const n = neutral(b);
    return openaiStream(peer!.url, { model: "default_model", messages: n.messages, ...(n.tools ? { tools: n.tools } : {}), max_tokens: b.max_tokens, temperature: 0 });
  };
  if (opts.warmup ?? true) {
    log(`prefix[${label}]: warm-up conversation`);
    await conversation(viaPensieve, fixture, -1, maxTokens);
    if (peer) await conversation(viaPeer, fixture, -1, maxTokens);
  }
  const ours: TurnPair[] = [];
  const theirs: TurnPair[] = [];
  for (let i = 0; i < repeats; i++) {
    const p = await conversation(viaPensieve, fixture, i, maxTokens);
    ours.push(p);
    if (peer) theirs.push(await conversation(viaPeer, fixture, i, maxTokens));
    log(`prefix[${label}] ${i + 1}/${repeats}: pensieve turn1 ${p.t1.ttftMs.toFixed(0)} ms, turn2 ${p.t2.ttftMs.toFixed(0)} ms (cached ${p.t2.cachedTokens})` + (peer ? `; peer ${theirs.at(-1)!.t1.ttftMs.toFixed(0)} / ${theirs.at(-1)!.t2.ttftMs.toFixed(0)} ms` : ""));
  }
  const a = summarise(ours);
  const b = peer ? summarise(theirs) : null;
  const notes: string[] = [];
  if (!a.turn2CachedTokens) notes.push(`${label}: Pensieve reported no cache_read_input_tokens on turn 2 (no prefix reuse in this build)`);
  const hasTarget = opts.target ?? true;
  const rows: Row[] = [
    {
      figure: "Prefix cache",
      measure: `TTFT turn 2 / turn 1, ${label} model${opts.about ? ` (${opts.about})` : ""}, Claude Code fixture (${a.turn1PromptTokens} -> ${a.turn2PromptTokens} tokens, ${a.turn2CachedTokens} reused, ${repeats} conversations)`,
      value: `${a.turn2TtftMs} ms`,
      reference: `${a.turn1TtftMs} ms turn 1`,
      ratio: a.ratio,
      target: hasTarget ? "≤ 0.10" : "",
      met: hasTarget && Number.isFinite(a.ratio) ? a.ratio <= 0.1 : null,
    },
  ];
  const bars: Bar[] = [{ label: `prefix cache: TTFT turn 2 / turn 1 (${label})`, value: a.ratio, target: hasTarget ? 0.1 : null, higherIsBetter: false }];
  if (b) {
    rows.push({
      figure: "Prefix cache",
      measure: `same, mlx_lm.server (${label} model, ${b.turn2CachedTokens} reused)`,
      value: `${b.turn2TtftMs} ms`,
      reference: `${b.turn1TtftMs} ms turn 1`,
      ratio: b.ratio,
      target: "",
      met: null,
    });
    bars.push({ label: `mlx_lm.server: TTFT turn 2 / turn 1 (${label})`, value: b.ratio, target: null, higherIsBetter: false });
  }
  return { rows, bars, notes, data: { model: label, repeats, maxTokens, pensieve: a, peer: b } };
}
