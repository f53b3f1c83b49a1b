/**
 * Figure 6, the binary: the size of the compiled `pensieve`, and its time from start to ready
 * without a model load: `--version` to exit, and `serve --backend openai` (which serves even while
 * its upstream is down) to the first answer from /health. Source mode is timed alongside.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SectionResult } from "../lib/report";
import { log, median, ratio, sig, stopProc, track } from "../lib/util";

const REPO = join(import.meta.dir, "..", "..");

/** `bun run build`, but into a temporary directory so a concurrent build of dist/ is not clobbered. */
async function build(): Promise<{ path: string; seconds: number; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), "pensieve-bench-bin-"));
  const out = join(dir, "pensieve");
  const t0 = performance.now();
  const proc = Bun.spawn([process.execPath, join(REPO, "scripts", "build.ts"), "--outfile", out], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0 || !existsSync(out)) throw new Error(`build failed (${code}): ${err.slice(-1500)}`);
  return { path: out, seconds: (performance.now() - t0) / 1000, dir };
}

async function versionMs(cmd: string[]): Promise<number> {
  const t0 = performance.now();
  const proc = Bun.spawn([...cmd, "--version"], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
  if (code !== 0 || !/\d+\.\d+\.\d+/.test(out)) throw new Error(`--version failed (${code}): ${out}`);
  return performance.now() - t0;
}

/** Spawn `serve --backend openai --upstream http://127.0.0.1:1 --port 0`, time until /health answers 200. */
async function readyMs(cmd: string[]): Promise<number> {
  const home = mkdtempSync(join(tmpdir(), "pensieve-bench-home-"));
  const t0 = performance.now();
  const proc = track(Bun.spawn([...cmd, "serve", "--backend", "openai", "--upstream", "http://127.0.0.1:1", "--port", "0", "--host", "127.0.0.1", "--home", home], {
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
    env: { ...process.env, PENSIEVE_HOME: home },
  }));
  try {
    const dec = new TextDecoder();
    let text = "";
    let port = 0;
    const reader = proc.stdout.getReader();
    while (!port) {
      const r = await reader.read();
      if (r.done) throw new Error(`serve exited before listening: ${text}${await new Response(proc.stderr).text()}`);
      text += dec.decode(r.value, { stream: true });
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(text);
      if (m) port = Number(m[1]);
    }
    reader.releaseLock();
    void proc.stdout.pipeTo(new WritableStream()).catch(() => {});
    void new Response(proc.stderr).arrayBuffer().catch(() => {});
    for (;;) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/health`);
        await res.arrayBuffer();
        if (res.status === 200) return performance.now() - t0;
      } catch {
        // not accepting yet
      }
      if (performance.now() - t0 > 30_000) throw new Error("/health did not answer within 30 s");
      await Bun.sleep(2);
    }
  } finally {
    await stopProc(proc);
    rmSync(home, { recursive: true, force: true });
  }
}

async function medianOf(n: number, fn: () => Promise<number>): Promise<{ median: number; samples: number[] }> {
  await fn(); // warm the page cache
  const samples: number[] = [];
  for (let i = 0; i < n; i++) samples.push(await fn());
  return { median: median(samples), samples: samples.map((s) => sig(s)!) };
}

export async function binarySection(opts: { quick: boolean; noBuild: boolean }): Promise<SectionResult> {
  const dist = join(REPO, "dist", "pensieve");
  let bin: string;
  let buildSeconds: number | null = null;
  let tmpDir: string | null = null;
  if (opts.noBuild || (opts.quick && existsSync(dist))) {
    if (!existsSync(dist)) throw new Error("--no-build but dist/pensieve does not exist: run `bun run build`");
    bin = dist;
    log(`binary: using the existing ${dist}`);
  } else {
    log("binary: building (scripts/build.ts into a temporary directory)");
    const b = await build();
    bin = b.path;
    buildSeconds = b.seconds;
    tmpDir = b.dir;
  }
  try {
    return await measureBinary(bin, bin === dist, buildSeconds, opts.quick);
  } finally {
    if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
  }
}

async function measureBinary(bin: string, isDist: boolean, buildSeconds: number | null, quick: boolean): Promise<SectionResult> {
  const size = statSync(bin).size / 2 ** 20;
  const n = quick ? 3 : 7;
  const source = [process.execPath, join(REPO, "src", "main.ts")];
  log("binary: --version and serve-to-ready times");
  const vBin = await medianOf(n, () => versionMs([bin]));
  const vSrc = await medianOf(n, () => versionMs(source));
  const rBin = await medianOf(n, () => readyMs([bin]));
  const rSrc = await medianOf(n, () => readyMs(source));
  log(`binary: ${size.toFixed(1)} MiB; --version ${vBin.median.toFixed(0)} ms; ready ${rBin.median.toFixed(0)} ms (source ${rSrc.median.toFixed(0)} ms)`);
  return {
    key: "binary",
    title: "6. The binary",
    data: { path: isDist ? "dist/pensieve" : "(fresh build of scripts/build.ts)", sizeMiB: sig(size), buildSeconds: buildSeconds === null ? null : sig(buildSeconds), versionMs: { binary: vBin, source: vSrc }, readyMs: { binary: rBin, source: rSrc }, readyCommand: "serve --backend openai --upstream http://127.0.0.1:1 --port 0, until GET /health answers 200" },
    rows: [
      { figure: "Binary", measure: `size of the compiled pensieve (${process.platform}-${process.arch})`, value: `${size.toFixed(1)} MiB`, reference: "", ratio: null, target: "", met: null },
      { figure: "Binary", measure: "start to exit: pensieve --version", value: `${vBin.median.toFixed(0)} ms`, reference: `${vSrc.median.toFixed(0)} ms from source (bun src/main.ts)`, ratio: ratio(vBin.median, vSrc.median), target: "", met: null },
      { figure: "Binary", measure: "start to ready, no model load: serve --backend openai (upstream down) until /health answers", value: `${rBin.median.toFixed(0)} ms`, reference: `${rSrc.median.toFixed(0)} ms from source`, ratio: ratio(rBin.median, rSrc.median), target: "", met: null },
    ],
    bars: [{ label: "start-to-ready: binary / source", value: ratio(rBin.median, rSrc.median), target: null, higherIsBetter: false }],
  };
}
