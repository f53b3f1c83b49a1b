/** The machine a run happened on: printed with every result, since absolute figures drift. */
import { cpus, loadavg, release, totalmem, type as osType } from "node:os";
import { readFileSync } from "node:fs";

export interface MachineInfo {
  cpu: string;
  cores: number;
  ramGiB: number;
  os: string;
  kernel: string;
  arch: string;
  bun: string;
  python: string;
  mlx: string;
  mlxLm: string;
  /** 1-minute load average at the start of the run: above `cores`, figures are noisy. */
  loadAvgStart: number;
  loadAvgEnd?: number;
  commit: string;
}

function osPretty(): string {
  try {
    const m = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(readFileSync("/etc/os-release", "utf8"));
    if (m) return m[1]!;
  } catch {
    // not Linux, or no os-release
  }
  return `${osType()} ${release()}`;
}

async function output(cmd: string[]): Promise<string> {
  try {
    const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
    const [text, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
    return code === 0 ? text.trim() : "";
  } catch {
    return "";
  }
}

/** Collect the machine facts (one Python call for the Python-side versions). */
export async function machineInfo(python: string, repo: string): Promise<MachineInfo> {
  const py = await output([
    python,
    "-c",
    "import json,sys,importlib.metadata as m;print(json.dumps({'python':sys.version.split()[0],'mlx':m.version('mlx'),'mlx_lm':m.version('mlx-lm')}))",
  ]);
  let versions = { python: "?", mlx: "?", mlx_lm: "?" };
  try {
    versions = JSON.parse(py);
  } catch {
    // keep the question marks
  }
  const commit = await output(["git", "-C", repo, "rev-parse", "--short", "HEAD"]);
  const dirty = (await output(["git", "-C", repo, "status", "--porcelain"])) !== "";
  return {
    cpu: cpus()[0]?.model.trim() ?? "unknown",
    cores: cpus().length,
    ramGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: osPretty(),
    kernel: release(),
    arch: process.arch,
    bun: Bun.version,
    python: versions.python,
    mlx: versions.mlx,
    mlxLm: versions.mlx_lm,
    loadAvgStart: Math.round(loadavg()[0]! * 100) / 100,
    commit: commit ? `${commit}${dirty ? " (uncommitted changes)" : ""}` : "unknown",
  };
}

export function finishMachineInfo(m: MachineInfo): void {
  m.loadAvgEnd = Math.round(loadavg()[0]! * 100) / 100;
}

export function describeMachine(m: MachineInfo): string {
  return (
    `${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB RAM, ${m.os} (${m.arch}, kernel ${m.kernel}); ` +
    `Bun ${m.bun}, Python ${m.python}, mlx ${m.mlx}, mlx-lm ${m.mlxLm}; ` +
    `load average ${m.loadAvgStart}${m.loadAvgEnd !== undefined ? ` -> ${m.loadAvgEnd}` : ""}; commit ${m.commit}`
  );
}
