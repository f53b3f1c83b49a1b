/**
 * Figure 8, constrained decoding of forced tool calls (python_bridge/pensieve_bridge/constrain.py):
 * the per-token cost of computing the next token's mask, for each structured-generation library
 * installed (llguidance, which the bridge uses; outlines-core when present), on the tiny model's
 * tokenizer and, when it is already converted on disk, Qwen2.5's 151k-token one; and the tiny
 * model's decode tok/s with the constraint over without. bench/constrain_bench.py measures.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Row, SectionResult } from "../lib/report";
import { log } from "../lib/util";

const REPO = join(import.meta.dir, "..", "..");

interface MaskFigure {
  tokenizer: string;
  tools: string;
  library: string;
  vocab?: number;
  mask_us_per_token?: number;
  mask_us_p90?: number;
  mask_us_mean?: number;
  compile_ms?: number;
  map_tokenizer_s?: number;
  error?: string;
}
interface Out {
  masks: MaskFigure[];
  e2e: { free_tok_s: number; constrained_tok_s: number; ratio: number } | null;
}

/** The converted Qwen2.5-Coder-0.5B from the real-model tests, if it is there (never fetched here). */
function qwenDir(): string | null {
  const root = join(REPO, ".pensieve", "test-models", "mlx");
  if (!existsSync(root)) return null;
  const hit = readdirSync(root).find((d) => d.includes("qwen2.5-coder-0.5b") && existsSync(join(root, d, "tokenizer.json")));
  return hit ? join(root, hit) : null;
}

const row = (measure: string, value: string, reference = "", ratio: number | null = null): Row => ({
  figure: "Constrained calls",
  measure,
  value,
  reference,
  ratio,
  target: "",
  met: null,
});

export async function constrainSection(python: string, tiny: string, opts: { quick: boolean }): Promise<SectionResult> {
  const dirs = [tiny, ...(qwenDir() ? [qwenDir()!] : [])];
  const tmp = mkdtempSync(join(tmpdir(), "pensieve-constrain-"));
  const outPath = join(tmp, "out.json");
  const fixture = join(REPO, "test", "fixtures", "claude-code-neutral-first-turn.json");
  const args = [join(import.meta.dir, "..", "constrain_bench.py"), ...dirs.flatMap((d) => ["--tokenizer", d]), "--model", tiny, "--repeats", opts.quick ? "2" : "5", "--json", outPath];
  if (existsSync(fixture)) args.push("--tools-fixture", fixture);
  log(`constrain: ${dirs.length} tokenizer(s), e2e on the tiny model`);
  const proc = Bun.spawn([python, ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, HF_HUB_OFFLINE: "1" } });
  const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`constrain_bench.py failed (${code}): ${err.slice(-400)}`);
  const out = JSON.parse(readFileSync(outPath, "utf8")) as Out;
  rmSync(tmp, { recursive: true, force: true });
  const rows: Row[] = [];
  for (const m of out.masks) {
    const name = m.tokenizer === tiny ? "tiny" : "Qwen2.5";
    if (m.error || m.mask_us_per_token === undefined) {
      rows.push(row(`${m.library} mask, ${name} tokenizer, ${m.tools}`, `(${(m.error ?? "failed").slice(0, 80)})`));
      continue;
    }
    rows.push(row(`${m.library} mask per token, ${name} tokenizer (${m.vocab} tokens), ${m.tools}`, `${m.mask_us_per_token} µs`, `mean ${m.mask_us_mean} µs, p90 ${m.mask_us_p90} µs; grammar ${m.compile_ms} ms`));
  }
  const bars = out.masks
    .filter((m) => m.mask_us_per_token !== undefined)
    .map((m) => ({ label: `${m.library} µs/token (${m.vocab}, ${m.tools})`, value: m.mask_us_per_token!, target: null, higherIsBetter: false }));
  if (out.e2e) {
    rows.push(row("tiny model decode, forced call constrained", `${out.e2e.constrained_tok_s} tok/s`, `${out.e2e.free_tok_s} tok/s unconstrained`, out.e2e.ratio));
  }
  const notes = ["xgrammar not measured: its wheel requires torch (and triton), disqualifying for the bridge's install."];
  if (dirs.length === 1) notes.push("Qwen2.5 tokenizer not on disk (run the real-model tests once): tiny tokenizer only.");
  notes.push("The tiny model decodes in ~1 ms/token, so the constraint's fixed cost per step (the sampled token read back before the next step) dominates its ratio; on a real model it is noise.");
  return { key: "constrain", title: "8. Constrained tool calls", data: out, rows, bars, notes };
}
