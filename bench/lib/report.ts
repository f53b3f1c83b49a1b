/** Result shapes and the three outputs: latest.json, latest.md (a Markdown table), chart.svg. */
import { describeMachine, type MachineInfo } from "./machine";

export interface Row {
  figure: string;
  measure: string;
  value: string;
  reference: string;
  /** value / reference, when the row is a comparison. */
  ratio: number | null;
  target: string;
  /** null when the row has no target (or it could not be measured). */
  met: boolean | null;
}

export interface Bar {
  label: string;
  value: number;
  /** Drawn as a marker on the bar's scale. */
  target: number | null;
  higherIsBetter: boolean;
}

export interface SectionResult {
  key: string;
  title: string;
  data: unknown;
  rows: Row[];
  bars: Bar[];
  notes?: string[];
}

export interface Report {
  generatedAt: string;
  mode: "full" | "quick";
  durationS: number;
  machine: MachineInfo;
  sections: SectionResult[];
}

const fmtRatio = (r: number | null) => (r === null || !Number.isFinite(r) ? "" : r.toFixed(3));
const metCell = (m: boolean | null) => (m === null ? "" : m ? "met" : "**missed**");
const esc = (s: string) => s.replace(/\|/g, "\\|");

export function toJson(r: Report): string {
  const sections = Object.fromEntries(r.sections.map((s) => [s.key, { title: s.title, ...(s.data as object), notes: s.notes ?? [] }]));
  return `${JSON.stringify({ generatedAt: r.generatedAt, mode: r.mode, durationS: r.durationS, machine: r.machine, table: r.sections.flatMap((s) => s.rows), sections }, null, 2)}\n`;
}

export function toMarkdown(r: Report): string {
  const lines = [
    `Pensieve benchmark, ${r.mode} run of ${r.generatedAt} (${Math.round(r.durationS)} s).`,
    "",
    `Machine: ${describeMachine(r.machine)}.`,
    "",
    "Every figure is a median over repeats; comparisons were measured side by side in the same run. Ratio = Pensieve over the comparison: for the overhead, peer and prefix rows, the median of per-repeat ratios (each repeat's contenders ran back to back), so it can differ slightly from the ratio of the two medians shown.",
    "",
    "| Figure | Measure | Pensieve | Compared with | Ratio | Target | Result |",
    "|---|---|---|---|---:|---|---|",
  ];
  for (const s of r.sections) {
    for (const row of s.rows) {
      lines.push(`| ${esc(row.figure)} | ${esc(row.measure)} | ${esc(row.value)} | ${esc(row.reference)} | ${fmtRatio(row.ratio)} | ${esc(row.target)} | ${metCell(row.met)} |`);
    }
  }
  const notes = r.sections.flatMap((s) => (s.notes ?? []).map((n) => `- ${s.title}: ${n}`));
  if (notes.length) lines.push("", "Notes:", "", ...notes);
  lines.push("", "Chart: [bench/results/chart.svg](chart.svg).", "");
  return lines.join("\n");
}

const xml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** A horizontal bar chart of the ratios, scaled to the largest value (and 1.0), targets as ticks. */
export function toSvg(r: Report): string {
  const bars = r.sections.flatMap((s) => s.bars).filter((b) => Number.isFinite(b.value));
  const labelW = 360;
  const plotW = 440;
  const rowH = 30;
  const top = 56;
  const width = labelW + plotW + 90;
  const height = top + bars.length * rowH + 46;
  const max = Math.max(1.2, ...bars.map((b) => b.value), ...bars.map((b) => b.target ?? 0)) * 1.05;
  const x = (v: number) => labelW + (Math.max(0, v) / max) * plotW;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="13">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="16" y="24" font-size="16" font-weight="600">Pensieve benchmark ratios (${xml(r.mode)} run, ${xml(r.generatedAt.slice(0, 10))})</text>`,
    `<text x="16" y="42" fill="#555" font-size="11">${xml(`${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.ramGiB} GiB, ${r.machine.os}; mlx ${r.machine.mlx}, mlx-lm ${r.machine.mlxLm}, Bun ${r.machine.bun}`)}</text>`,
  ];
  // Reference line at 1.0 (parity).
  out.push(`<line x1="${x(1)}" y1="${top - 6}" x2="${x(1)}" y2="${top + bars.length * rowH}" stroke="#999" stroke-dasharray="3,3"/>`);
  out.push(`<text x="${x(1)}" y="${top + bars.length * rowH + 16}" text-anchor="middle" fill="#555" font-size="11">1.0</text>`);
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    const good = b.target === null ? null : b.higherIsBetter ? b.value >= b.target : b.value <= b.target;
    const fill = good === null ? "#6b8fc7" : good ? "#4c9a5b" : "#c75a4c";
    out.push(`<text x="${labelW - 10}" y="${y + 18}" text-anchor="end">${xml(b.label)}</text>`);
    out.push(`<rect x="${labelW}" y="${y + 5}" width="${Math.max(1, x(b.value) - labelW).toFixed(1)}" height="${rowH - 10}" fill="${fill}"/>`);
    out.push(`<text x="${(x(b.value) + 6).toFixed(1)}" y="${y + 18}" fill="#222">${b.value.toFixed(3)}</text>`);
    if (b.target !== null) {
      const tx = x(b.target).toFixed(1);
      out.push(`<line x1="${tx}" y1="${y + 2}" x2="${tx}" y2="${y + rowH - 2}" stroke="#222" stroke-width="2"/>`);
    }
  });
  const ly = top + bars.length * rowH + 32;
  out.push(
    `<text x="16" y="${ly}" fill="#555" font-size="11">Green: target met; red: missed; blue: no target. Black tick: target. Dashed: parity (1.0). Medians over repeats.</text>`,
  );
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}
