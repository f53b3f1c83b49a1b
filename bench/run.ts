/**
 * `bun run bench [-- --quick]`: the benchmark suite. Writes bench/results/latest.json,
 * latest.md (a Markdown table) and chart.svg. Every figure is a median over repeats and every
 * comparison runs side by side in this one run, reported as a ratio.
 *
 * Options: --quick (smoke run: tiny model only, fewer repeats, no 2-layer prefix figure), --only=gate,engines,prefix,memory,binary,translate,constrain,
 * --no-build (time dist/pensieve instead of a fresh build), --prefix-100m (also run the prefix-cache
 * figure on the ~100M model; on a CPU-only machine its first turn can take most of an hour).
 * Real models (section `real`, when the GGUFs are in .pensieve/test-models): --llama-server PATH
 * (an existing binary instead of the cached build), --no-llama-server-build, --real-mlx-long (the
 * MLX family on the ~12k fixture too: slow on a CPU), --real-mlx-1.5b, --real-models=0.5b,1.5b,
 * --real-families=llama,mlx, --real-repeats=N.
 */
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { testPython, tinyModelDir } from "../test/support/server-process";
import { describeMachine, finishMachineInfo, machineInfo } from "./lib/machine";
import { toJson, toMarkdown, toSvg, type Report, type Row, type SectionResult } from "./lib/report";
import { killTracked, log } from "./lib/util";
import { binarySection } from "./sections/binary";
import { measureModel, startContenders, stopContenders, type ModelCase } from "./sections/engines";
import { gateSection } from "./sections/gate";
import { memorySection } from "./sections/memory";
import { measurePrefix } from "./sections/prefix";
import { translateSection } from "./sections/translate";
import { constrainSection } from "./sections/constrain";
import { realSection } from "./sections/real";
import { startPensieve, type Pensieve } from "./lib/servers";

const REPO = join(import.meta.dir, "..");
const RESULTS = join(import.meta.dir, "results");
const SECTIONS = ["gate", "engines", "prefix", "memory", "binary", "translate", "constrain", "real"] as const;
type SectionKey = (typeof SECTIONS)[number];

const USAGE =
  `usage: bun run bench [-- --quick] [--only=${SECTIONS.join(",")}] [--no-build] [--prefix-100m]` +
  " [--llama-server PATH] [--no-llama-server-build] [--real-mlx-long] [--real-mlx-1.5b] [--real-models=0.5b,1.5b] [--real-families=llama,mlx] [--real-repeats=N]";

function parseArgs(argv: string[]) {
  const opts = {
    quick: false,
    noBuild: false,
    prefix100m: false,
    only: new Set<SectionKey>(SECTIONS),
    real: { mlxLong: false, mlx15b: false, llamaServerPath: undefined as string | undefined, llamaServerBuild: true, models: ["0.5b", "1.5b"] as ("0.5b" | "1.5b")[], repeats: undefined as number | undefined, families: undefined as ("llama" | "mlx")[] | undefined },
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--quick") opts.quick = true;
    else if (a === "--llama-server" || a.startsWith("--llama-server=")) {
      const v = a.includes("=") ? a.slice(a.indexOf("=") + 1) : argv[++i];
      if (!v) throw new Error(`--llama-server needs a PATH\n${USAGE}`);
      opts.real.llamaServerPath = v;
    } else if (a === "--no-llama-server-build") opts.real.llamaServerBuild = false;
    else if (a === "--real-mlx-long") opts.real.mlxLong = true;
    else if (a === "--real-mlx-1.5b") opts.real.mlx15b = true;
    else if (a.startsWith("--real-repeats=")) opts.real.repeats = Math.max(1, Number(a.slice(15)) || 1);
    else if (a.startsWith("--real-families=")) {
      const fs = a.slice(16).split(",").filter(Boolean);
      for (const k of fs) if (k !== "llama" && k !== "mlx") throw new Error(`unknown real family '${k}' (llama, mlx)\n${USAGE}`);
      opts.real.families = fs as ("llama" | "mlx")[];
    } else if (a.startsWith("--real-models=")) {
      const ms = a.slice(14).split(",").filter(Boolean);
      for (const k of ms) if (k !== "0.5b" && k !== "1.5b") throw new Error(`unknown real model '${k}' (0.5b, 1.5b)\n${USAGE}`);
      opts.real.models = ms as ("0.5b" | "1.5b")[];
    }
    else if (a === "--no-build") opts.noBuild = true;
    else if (a === "--prefix-100m") opts.prefix100m = true;
    else if (a.startsWith("--only=")) {
      const keys = a.slice(7).split(",").filter(Boolean);
      for (const k of keys) if (!SECTIONS.includes(k as SectionKey)) throw new Error(`unknown section '${k}'\n${USAGE}`);
      opts.only = new Set(keys as SectionKey[]);
    } else if (a === "--help" || a === "-h") {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown option '${a}'\n${USAGE}`);
  }
  return opts;
}

/** The ~100M random-weight model (bench/make_bench_model.py), generated once. */
async function benchModelDir(python: string): Promise<string> {
  const dir = join(REPO, ".pensieve", "bench-models", "b100m");
  const proc = Bun.spawn([python, join(import.meta.dir, "make_bench_model.py"), dir], { stdout: "pipe", stderr: "pipe" });
  const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`make_bench_model.py failed (${code}): ${err}`);
  log(err.trim());
  return dir;
}

/** The tiny model with 2 layers (bench/make_prefix_model.py), whose first turn costs real prefill. */
async function prefixModelDir(python: string): Promise<string> {
  const dir = join(REPO, ".pensieve", "bench-models", "prefix-2layer");
  const proc = Bun.spawn([python, join(import.meta.dir, "make_prefix_model.py"), dir], { stdout: "pipe", stderr: "pipe" });
  const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`make_prefix_model.py failed (${code}): ${err}`);
  log(err.trim());
  return dir;
}

function failed(key: string, title: string, err: unknown): SectionResult {
  const msg = err instanceof Error ? err.message.split("\n")[0]! : String(err);
  log(`${key} FAILED: ${err instanceof Error ? err.stack : msg}`);
  const row: Row = { figure: title, measure: "(section failed)", value: msg.slice(0, 160), reference: "", ratio: null, target: "", met: null };
  return { key, title, data: { error: String(err) }, rows: [row], bars: [], notes: [`failed: ${msg}`] };
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const started = performance.now();
  const python = testPython();
  const machine = await machineInfo(python, REPO);
  log(`machine: ${describeMachine(machine)}`);
  if (machine.loadAvgStart > machine.cores) log(`note: load average ${machine.loadAvgStart} > ${machine.cores} cores; figures will be noisy`);

  const tiny = await tinyModelDir();
  const big = opts.quick || !(opts.only.has("engines") || opts.prefix100m) ? null : await benchModelDir(python);
  const sections: SectionResult[] = [];
  const run = async (key: SectionKey, title: string, fn: () => Promise<SectionResult>) => {
    if (!opts.only.has(key)) return;
    try {
      sections.push(await fn());
    } catch (e) {
      sections.push(failed(key, title, e));
    }
  };

  await run("gate", "1. Gate", () => gateSection({ quick: opts.quick }));

  // Figures 2-4 share the contenders of each model: Pensieve, the in-process baseline, mlx_lm.server.
  const cases: ModelCase[] = [{ label: "tiny", dir: tiny, maxTokens: opts.quick ? 128 : 256, repeats: opts.quick ? 3 : 9, promptWords: 80, diagnostic: true }];
  if (big) cases.push({ label: "~100M", dir: big, maxTokens: 32, repeats: 5, promptWords: 12 });
  const engines: SectionResult = { key: "engines", title: "2-3. Overhead over the engine, and the peer", data: { models: [] as unknown[] }, rows: [], bars: [], notes: [] };
  const prefix: SectionResult = { key: "prefix", title: "4. Prefix cache", data: { models: [] as unknown[] }, rows: [], bars: [], notes: [] };
  let bigPrefillTps = Number.NaN;
  for (const c of cases) {
    const wantEngines = opts.only.has("engines");
    const wantPrefix = opts.only.has("prefix") && (c.label === "tiny" || opts.prefix100m);
    if (!wantEngines && !wantPrefix) continue;
    let k: Awaited<ReturnType<typeof startContenders>> | null = null;
    try {
      log(`${c.label}: starting Pensieve, the in-process baseline and mlx_lm.server`);
      // A whole-fixture prefill on the ~100M model keeps the worker busy far beyond the default request timeout.
      const slow = c.label !== "tiny" && wantPrefix ? ["--request-timeout-ms", String(4 * 3600_000)] : [];
      k = await startContenders(python, c.dir, c.diagnostic && wantEngines, slow);
      if (wantEngines) {
        try {
          const r = await measureModel(c, k);
          engines.rows.push(...r.rows);
          engines.bars.push(...r.bars);
          engines.notes!.push(...r.notes);
          (engines.data as { models: unknown[] }).models.push(r.data);
          if (c.label !== "tiny") bigPrefillTps = r.enginePrefillTps;
        } catch (e) {
          engines.rows.push(...failed("engines", `Overhead (${c.label})`, e).rows);
        }
      }
      if (wantPrefix) {
        try {
          const tinyCase = c.label === "tiny";
          // On the ~100M model one conversation costs the better part of an hour on a CPU: no warm-up, no peer.
          const r = await measurePrefix(c.label, k.pensieve, tinyCase ? k.peer : null, tinyCase ? (opts.quick ? 2 : 5) : 1, {
            warmup: tinyCase,
            // The 1-layer model prefills almost for free: its ratio is fixed costs over nearly nothing.
            ...(tinyCase && !opts.quick ? { target: false, about: "1 layer: prefill nearly free, so turn 1 is mostly fixed costs" } : {}),
          });
          prefix.rows.push(...r.rows);
          prefix.bars.push(...r.bars);
          prefix.notes!.push(...r.notes);
          (prefix.data as { models: unknown[] }).models.push(r.data);
        } catch (e) {
          prefix.rows.push(...failed("prefix", `Prefix cache (${c.label})`, e).rows);
        }
      }
    } catch (e) {
      engines.rows.push(...failed("engines", `${c.label} model`, e).rows);
    } finally {
      if (k) await stopContenders(k);
    }
  }
  // The target's figure: a 2-layer model whose first turn is real prefill work (~35 s here on a CPU).
  if (opts.only.has("prefix") && !opts.quick) {
    let p: Pensieve | null = null;
    try {
      const dir = await prefixModelDir(python);
      log("prefix[2-layer]: starting Pensieve");
      p = await startPensieve(dir);
      const r = await measurePrefix("2-layer tiny", p, null, 3, { warmup: false, about: "hidden 64" });
      prefix.rows.unshift(...r.rows);
      prefix.bars.unshift(...r.bars);
      prefix.notes!.push(...r.notes);
      (prefix.data as { models: unknown[] }).models.unshift(r.data);
    } catch (e) {
      prefix.rows.unshift(...failed("prefix", "Prefix cache (2-layer tiny)", e).rows);
    } finally {
      await p?.stop();
    }
  }
  if (big && opts.only.has("prefix") && !opts.prefix100m) {
    const tinyPrefix = (prefix.data as { models: { pensieve?: { turn1PromptTokens?: number } }[] }).models[0]?.pensieve?.turn1PromptTokens;
    const tokens = tinyPrefix ?? Number.NaN;
    const minutes = tokens / bigPrefillTps / 60;
    prefix.notes!.push(
      `~100M model not run by default: its first turn prefills the whole ${Number.isFinite(tokens) ? tokens : "~25k"}-token fixture, ` +
        `about ${Number.isFinite(minutes) ? minutes.toFixed(0) : "?"} min at the ${Number.isFinite(bigPrefillTps) ? bigPrefillTps.toFixed(1) : "?"} prompt tokens/s measured on this machine (MLX CPU build). Run with --prefix-100m.`,
    );
  }
  if (opts.only.has("engines")) sections.push(engines);
  if (opts.only.has("prefix")) sections.push(prefix);

  await run("memory", "5. Memory", () => memorySection(tiny, { quick: opts.quick }));
  await run("binary", "6. The binary", () => binarySection({ quick: opts.quick, noBuild: opts.noBuild }));
  await run("translate", "7. Translation", () => translateSection({ quick: opts.quick }));
  await run("constrain", "8. Constrained tool calls", () => constrainSection(python, tiny, { quick: opts.quick }));
  // Real GGUF models: a clear skipped row when they are not on disk (never fetched by the bench).
  await run("real", "9. Real models", () => realSection(python, { quick: opts.quick, ...opts.real }));

  finishMachineInfo(machine);
  const report: Report = { generatedAt: new Date().toISOString(), mode: opts.quick ? "quick" : "full", durationS: (performance.now() - started) / 1000, machine, sections };
  mkdirSync(RESULTS, { recursive: true });
  const write = (name: string, text: string) => {
    const path = join(RESULTS, name);
    writeFileSync(`${path}.tmp`, text);
    renameSync(`${path}.tmp`, path);
  };
  const md = toMarkdown(report);
  write("latest.json", toJson(report));
  write("latest.md", md);
  write("chart.svg", toSvg(report));
  console.log(md);
  log(`wrote bench/results/latest.json, latest.md and chart.svg in ${Math.round(report.durationS)} s`);
}

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    killTracked();
    process.exit(130);
  });
}

main().then(
  () => process.exit(0),
  (err) => {
    killTracked();
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
