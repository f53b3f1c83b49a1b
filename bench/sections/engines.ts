/**
 * Figures 2 and 3: decode tokens/s and time to first token through Pensieve (HTTP + SSE),
 * against in-process mlx_lm.stream_generate (bench/engine_baseline.py) and against the peer,
 * mlx_lm.server (OpenAI streaming API), on the same model, prompt, greedy settings and
 * max_tokens. The three run side by side, in rotating order, one request at a time.
 */
import { blasEnv } from "../../src/models/blas";
import { toPromptInput } from "../../src/anthropic/translate";
import { join } from "node:path";
import { anthropicStream, decodeTps, EngineBaseline, openaiStream, WorkerDirect, type RunTiming } from "../lib/clients";
import type { Bar, Row, SectionResult } from "../lib/report";
import { startPeer, startPensieve, TOKEN, type Peer, type Pensieve } from "../lib/servers";
import { log, median, ratio, sig } from "../lib/util";

export interface ModelCase {
  /** Short label: "tiny", "~100M". */
  label: string;
  dir: string;
  maxTokens: number;
  repeats: number;
  /** Words of user text: sets the prompt length. */
  promptWords: number;
  /** Also run Pensieve's worker alone over its protocol (splits the overhead worker vs Bun). */
  diagnostic?: boolean;
}

const WORDS = "the server streams text deltas token counts and stop reasons while memory stays safe".split(" ");
const WORKER_SCRIPT = join(import.meta.dir, "..", "..", "python_bridge", "mlx_inference.py");

/** The Anthropic body for repeat `i`: a nonce first, so no server can reuse an earlier prompt's cache. */
export function promptBody(i: number, c: ModelCase): Record<string, unknown> {
  const words = Array.from({ length: c.promptWords }, (_, k) => WORDS[(k * 5 + i) % WORDS.length]).join(" ");
  return {
    model: "claude-sonnet-4-5",
    max_tokens: c.maxTokens,
    temperature: 0,
    // The nonce opens the system text: only the template's own head ("<|im_start|>system\n") is shared.
    system: `${Math.random().toString(36).slice(2, 8)}${i} bench session. You are a helpful assistant.`,
    messages: [{ role: "user", content: `Please summarise: ${words}` }],
  };
}

/** The same prompt in the engine's neutral dialect, exactly as Pensieve translates it. */
export function neutral(body: Record<string, unknown>) {
  const input = toPromptInput(body as never, { model: "default", supportsVision: false });
  return { messages: input.messages, tools: input.tools };
}

type Who = "pensieve" | "engine" | "peer" | "worker";

export interface Contenders {
  pensieve: Pensieve;
  engine: EngineBaseline;
  peer: Peer;
  /** Diagnostic: Pensieve's worker alone, over its protocol (when asked for). */
  worker?: WorkerDirect;
}

async function runOne(who: Who, c: Contenders, body: Record<string, unknown>): Promise<RunTiming> {
  const n = neutral(body);
  const maxTokens = body.max_tokens as number;
  if (who === "pensieve") return anthropicStream(c.pensieve.url, body, TOKEN);
  if (who === "engine") return c.engine.generate(n.messages, n.tools, maxTokens);
  if (who === "worker") return c.worker!.generate(n.messages, n.tools, maxTokens);
  return openaiStream(c.peer.url, { model: "default_model", messages: n.messages, ...(n.tools ? { tools: n.tools } : {}), max_tokens: maxTokens, temperature: 0 });
}

/** Start the three contenders on one model (one after the other, so loads do not fight). */
export async function startContenders(python: string, dir: string, diagnostic = false, pensieveArgs: string[] = []): Promise<Contenders> {
  const started: Partial<Contenders> = {};
  // Pensieve's server preloads OpenBLAS into its worker: every other MLX contender gets it too.
  const blas = blasEnv();
  try {
    started.pensieve = await startPensieve(dir, { extraArgs: pensieveArgs });
    started.engine = new EngineBaseline(python, dir, blas);
    await started.engine.start();
    started.peer = await startPeer(python, dir, blas);
    if (diagnostic) {
      started.worker = new WorkerDirect(python, WORKER_SCRIPT, dir, blas);
      await started.worker.start();
    }
    return started as Contenders;
  } catch (e) {
    await stopContenders(started);
    throw e;
  }
}

export async function stopContenders(c: Partial<Contenders>): Promise<void> {
  await Promise.allSettled([c.pensieve?.stop(), c.engine?.stop(), c.peer?.stop(), c.worker?.stop()]);
}

export interface EngineCaseResult {
  rows: Row[];
  bars: Bar[];
  data: Record<string, unknown>;
  notes: string[];
  /** Prompt tokens/s of the in-process engine (prefill), for estimates elsewhere. */
  enginePrefillTps: number;
}

/** Median over repeats of a/b, each repeat's pair measured back to back (drift cancels). */
function pairedRatio(a: RunTiming[], b: RunTiming[], f: (r: RunTiming) => number): number {
  return median(a.map((r, i) => ratio(f(r), f(b[i]!))));
}

export async function measureModel(c: ModelCase, k: Contenders): Promise<EngineCaseResult> {
  const who: Who[] = k.worker ? ["pensieve", "engine", "peer", "worker"] : ["pensieve", "engine", "peer"];
  log(`engines[${c.label}]: warm-up`);
  for (const w of who) await runOne(w, k, promptBody(-1, { ...c, maxTokens: Math.min(c.maxTokens, 8) }));
  const runs: Record<Who, RunTiming[]> = { pensieve: [], engine: [], peer: [], worker: [] };
  let samePrompt = true;
  let sameText = true;
  for (let i = 0; i < c.repeats; i++) {
    const body = promptBody(i, c);
    // Rotate the order so that no contender always runs first (or right after another).
    const order = who.map((_, j) => who[(j + i) % who.length]!);
    const got: Partial<Record<Who, RunTiming>> = {};
    for (const w of order) got[w] = await runOne(w, k, body);
    for (const w of who) runs[w].push(got[w]!);
    const p = got.pensieve!;
    if (who.some((w) => got[w]!.inputTokens !== p.inputTokens)) samePrompt = false;
    if (who.some((w) => got[w]!.text !== p.text)) sameText = false;
    log(
      `engines[${c.label}] ${i + 1}/${c.repeats}: tok/s ` +
        who.map((w) => `${w} ${decodeTps(got[w]!).toFixed(1)}`).join(", ") +
        "; ttft ms " +
        who.map((w) => got[w]!.ttftMs.toFixed(1)).join(" / "),
    );
  }
  const tps = (w: Who) => median(runs[w].map(decodeTps));
  const ttft = (w: Who) => median(runs[w].map((r) => r.ttftMs));
  const ttftOf = (r: RunTiming) => r.ttftMs;
  const summary = Object.fromEntries(
    who.map((w) => [
      w,
      {
        decodeTps: sig(tps(w)),
        ttftMs: sig(ttft(w)),
        outputTokens: median(runs[w].map((r) => r.outputTokens)),
        promptTokens: median(runs[w].map((r) => r.inputTokens)),
        samples: runs[w].map((r) => ({ ttftMs: sig(r.ttftMs), decodeTps: sig(decodeTps(r)), outputTokens: r.outputTokens, promptTokens: r.inputTokens, cachedTokens: r.cachedTokens })),
      },
    ]),
  );
  const rTpsEngine = pairedRatio(runs.pensieve, runs.engine, decodeTps);
  const rTpsPeer = pairedRatio(runs.pensieve, runs.peer, decodeTps);
  const rTtftEngine = pairedRatio(runs.pensieve, runs.engine, ttftOf);
  const rTtftPeer = pairedRatio(runs.pensieve, runs.peer, ttftOf);
  const rTpsWorker = k.worker ? pairedRatio(runs.worker, runs.engine, decodeTps) : Number.NaN;
  const m = c.label;
  const notes: string[] = [];
  if (!samePrompt) notes.push(`${m}: prompt token counts differed between contenders (rendering mismatch?)`);
  if (!sameText) notes.push(`${m}: greedy outputs were not identical across contenders`);
  const tokens = summary.pensieve!.outputTokens;
  const prompt = summary.pensieve!.promptTokens;
  const setting = `${prompt}-token prompt, ${tokens} tokens, greedy, ${c.repeats} repeats`;
  const rows: Row[] = [
    {
      figure: "Overhead",
      measure: `decode tok/s, ${m} model (${setting})`,
      value: `${tps("pensieve").toFixed(1)} tok/s`,
      reference: `${tps("engine").toFixed(1)} tok/s in-process mlx_lm.stream_generate`,
      ratio: rTpsEngine,
      target: "≥ 0.97",
      met: Number.isFinite(rTpsEngine) ? rTpsEngine >= 0.97 : null,
    },
    {
      figure: "Overhead",
      measure: `TTFT, ${m} model`,
      value: `${ttft("pensieve").toFixed(1)} ms`,
      reference: `${ttft("engine").toFixed(1)} ms in-process`,
      ratio: rTtftEngine,
      target: "",
      met: null,
    },
  ];
  if (k.worker) {
    rows.push({
      figure: "Overhead",
      measure: `(diagnostic) decode tok/s, ${m} model, Pensieve's worker alone over its JSON-lines protocol (no Bun, no HTTP)`,
      value: `${tps("worker").toFixed(1)} tok/s`,
      reference: `${tps("engine").toFixed(1)} tok/s in-process`,
      ratio: rTpsWorker,
      target: "",
      met: null,
    });
  }
  rows.push(
    {
      figure: "Peer",
      measure: `decode tok/s, ${m} model`,
      value: `${tps("pensieve").toFixed(1)} tok/s`,
      reference: `${tps("peer").toFixed(1)} tok/s mlx_lm.server`,
      ratio: rTpsPeer,
      target: "≥ 1.0",
      met: Number.isFinite(rTpsPeer) ? rTpsPeer >= 1 : null,
    },
    {
      figure: "Peer",
      measure: `TTFT, ${m} model`,
      value: `${ttft("pensieve").toFixed(1)} ms`,
      reference: `${ttft("peer").toFixed(1)} ms mlx_lm.server`,
      ratio: rTtftPeer,
      target: "≤ 1.0",
      met: Number.isFinite(rTtftPeer) ? rTtftPeer <= 1 : null,
    },
  );
  return {
    enginePrefillTps: (median(runs.engine.map((r) => r.inputTokens)) * 1000) / ttft("engine"),
    notes,
    data: {
      model: m,
      dir: c.dir,
      maxTokens: c.maxTokens,
      repeats: c.repeats,
      samePromptTokens: samePrompt,
      identicalGreedyText: sameText,
      ...summary,
      ratios: {
        method: "median over repeats of the per-repeat ratio (contenders run back to back, rotating order)",
        tpsPensieveOverEngine: sig(rTpsEngine),
        ttftPensieveOverEngine: sig(rTtftEngine),
        tpsPensieveOverPeer: sig(rTpsPeer),
        ttftPensieveOverPeer: sig(rTtftPeer),
        tpsWorkerOverEngine: sig(rTpsWorker),
        tpsPensieveOverEngineRatioOfMedians: sig(ratio(tps("pensieve"), tps("engine"))),
      },
    },
    rows,
    bars: [
      { label: `tok/s Pensieve / mlx-lm in-process (${m})`, value: rTpsEngine, target: 0.97, higherIsBetter: true },
      { label: `tok/s Pensieve / mlx_lm.server (${m})`, value: rTpsPeer, target: 1, higherIsBetter: true },
      { label: `TTFT Pensieve / mlx_lm.server (${m})`, value: rTtftPeer, target: 1, higherIsBetter: false },
    ],
  };
}

/** Figures 2 + 3 for each model case. Contenders are started and stopped per model. */
export async function enginesSection(python: string, cases: ModelCase[]): Promise<SectionResult & { prefillTps: Record<string, number> }> {
  const result = { key: "engines", title: "2-3. Overhead over the engine, and the peer", rows: [] as Row[], bars: [] as Bar[], notes: [] as string[], data: { models: [] as unknown[] }, prefillTps: {} as Record<string, number> };
  for (const c of cases) {
    log(`engines[${c.label}]: starting Pensieve, the in-process baseline and mlx_lm.server on ${c.dir}`);
    const k = await startContenders(python, c.dir, c.diagnostic);
    try {
      const r = await measureModel(c, k);
      result.rows.push(...r.rows);
      result.bars.push(...r.bars);
      result.notes.push(...r.notes);
      result.data.models.push(r.data);
      result.prefillTps[c.label] = r.enginePrefillTps;
    } finally {
      await stopContenders(k);
    }
  }
  return result;
}
